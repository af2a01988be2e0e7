"""The authors' release measures more than Table 1 shows; these commands measure the same, on the released data sets.

    flickr8k    Kendall tau-c between the raw cosine of each caption with its image and three
                experts' 1-4 scores of the pair (flickr8k.py), on Flickr8k-Expert
    sst2        zero-shot macro-F1 on Rendered SST2, "A picture of text with {} sentiment" (sst2.py)
    country211  zero-shot macro-F1 on Country211, "A picture of the country of {}" (country211.py)
    length      Pearson r between the raw cosine of a description with its image and the
                description's length in characters (cosid.py, which writes it to length.csv):
                over the descriptions BLV participants rated (--ratings), or over a Concadia
                split's descriptions (--data; the toy world's by default, its stand-in)

Each prints one line (``--json`` for JSON); what was left out is counted on stderr. The readers
are clip_min/data/flickr8k.py and clip_min/data/clip_tasks.py; docs/09-evaluation.md shows the
layouts and commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..data.clip_tasks import RELEASE_PROMPTS, SPLITS, read_country211, read_country_names, read_rendered_sst2
from ..data.concadia import DataError
from ..data.flickr8k import read_flickr8k_expert
from ..data.ratings import ratings_folders, read_ratings
from ..train.config import RECIPES
from ..train.evaluation import load_split
from ..train.features import encode_images
from ..train.runs import RECIPE_STEP
from .blv import BLV_RECIPES, blv_recipe, description_scores
from .evaluate import task_f1
from .session import Session, add_model_options, notes_to_stderr, open_model, print_json, text_features


def kendall_tau_c(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Stuart's tau-c and its p-value, as the release computes them (scipy.stats.kendalltau, variant "c")."""
    result = stats.kendalltau(x, y, variant="c")
    return float(result.statistic), float(result.pvalue)


def flickr8k_command(args: argparse.Namespace) -> int:
    data = read_flickr8k_expert(args.data, args.images)
    session = open_model(args)
    paths = sorted({pair.image for pair in data.pairs})
    with notes_to_stderr():
        features, ok = encode_images(session.model, paths, session.vision_id, device=session.device,
                                     autocast=session.autocast, desc="encoding Flickr8k images")
    decoded = {path: features[i] for i, path in enumerate(paths) if ok[i]}
    pairs = [pair for pair in data.pairs if pair.image in decoded]
    if len(pairs) < len(data.pairs):
        data.skipped["pairs whose image does not decode"] += len(data.pairs) - len(pairs)
    if not pairs:
        raise DataError(f"{args.data}: no judged pair has an image that decodes")
    texts = text_features(session, [pair.caption for pair in pairs])
    cosine = F.cosine_similarity(torch.stack([decoded[pair.image] for pair in pairs]), texts, dim=-1).double().numpy()
    # One point per expert's score: the pair's cosine stands beside each of its three.
    x = np.repeat(cosine, 3)
    y = np.array([score for pair in pairs for score in pair.scores], dtype=np.float64)
    tau, p = kendall_tau_c(x, y)
    for reason, n in data.skipped.items():
        print(f"left out: {n} {reason}", file=sys.stderr)
    if args.json:
        print_json({"kendall_tau_c": tau, "p": p, "judgements": len(y), "pairs": len(pairs),
                    "skipped": dict(data.skipped)})
    else:
        print(f"Flickr8k-Expert: Kendall tau-c {tau:.3f} (p = {p:.2g}) between the cosine of the bare caption with "
              f"its image and {len(y)} expert scores of {len(pairs)} pairs")
    return 0


def zero_shot_command(args: argparse.Namespace) -> int:
    with notes_to_stderr():
        if args.command == "sst2":
            task = read_rendered_sst2(args.data, args.split)
        else:
            task = read_country211(args.data, read_country_names(args.names), args.split)
    template = args.prompt or RELEASE_PROMPTS[task.layout]
    if "{}" not in template:
        raise ValueError(f"--prompt {template!r} has no {{}} where the class name goes")
    session = open_model(args)
    f1, n, _ = task_f1(session, task, [template.format(name) for name in task.classes], task.name)
    if args.json:
        print_json({"task": task.name, "split": args.split, "macro_f1": f1, "images": n, "classes": len(task.classes),
                    "prompt": template})
    else:
        print(f"{task.name} {args.split}: macro-F1 {f1:.1%} on {n} images, {len(task.classes)} classes "
              f"(prompt {template!r})")
    return 0


def length_command(args: argparse.Namespace) -> int:
    if args.ratings is not None and args.data is not None:
        raise ValueError("give --ratings (the rated descriptions) or --data (a Concadia split), not both")
    recipe = blv_recipe(args)
    args.step = args.step or RECIPE_STEP[recipe]
    if args.ratings is not None:
        folder, images = ratings_folders(args.ratings, args.images)
        ratings = read_ratings(folder, **BLV_RECIPES[recipe])
        session = open_model(args)
        scores, skipped = description_scores(session, ratings, images, "cosine")
        for reason, n in (ratings.skipped + skipped).items():
            print(f"left out: {n} {reason}", file=sys.stderr)
        texts, cosine = [key[2] for key in scores], list(scores.values())
        where = f"the {len(texts)} rated descriptions ({recipe} recipe)"
    else:
        session = open_model(args)
        texts, cosine, where = concadia_descriptions(args, session)
    if len(texts) < 3:
        raise DataError(f"{len(texts)} descriptions scored; a correlation needs at least 3")
    lengths = np.array([len(text) for text in texts], dtype=np.float64)
    r, p = stats.pearsonr(lengths, np.array(cosine, dtype=np.float64))
    if args.json:
        print_json({"pearson": float(r), "p": float(p), "descriptions": len(texts), "over": where})
    else:
        print(f"length: Pearson r {r:+.3f} (p = {p:.2g}) between the cosine of each description with its image and "
              f"its length in characters, over {where}")
    return 0


def concadia_descriptions(args: argparse.Namespace, session: Session) -> tuple[list[str], list[float], str]:
    """The descriptions of a Concadia split (--data, the run's, or the toy world's) and their cosines with their images."""
    data, images = args.data, args.images
    if data is None:
        data, images = session.loaded.config.get("data"), images or session.loaded.config.get("images")
    if data is None:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            data = toy_world()[0] / "concadia"
    with notes_to_stderr():
        split = load_split(session.model, Path(data), images, args.split, session.vision_id, session.device,
                           session.autocast)
    texts = [example.description for example in split.examples]
    features = text_features(session, texts)
    cosine = F.cosine_similarity(split.image_features.float(), features, dim=-1).tolist()
    return texts, cosine, f"the {len(texts)} descriptions of {data}'s {args.split} split"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``flickr8k``, ``sst2``, ``country211`` and ``length`` to eval.py's subcommands."""
    p = subparsers.add_parser("flickr8k", help="Kendall tau-c with Flickr8k-Expert's judgements (the release's flickr8k.py)")
    add_model_options(p)
    p.add_argument("--data", required=True, help="the folder holding ExpertAnnotations.txt and Flickr8k.token.txt "
                                                 "(or their Flickr8k_text/)")
    p.add_argument("--images", help="the images, if not DATA/Flicker8k_Dataset")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=flickr8k_command)

    for name, layout, extra in (("sst2", "rendered-sst2/", "Rendered SST2"), ("country211", "country211/", "Country211")):
        p = subparsers.add_parser(name, help=f"zero-shot macro-F1 on {extra} (the release's {name}.py)")
        add_model_options(p)
        p.add_argument("--data", required=True, help=f"{layout} as its .tgz unpacks, or the folder holding it")
        if name == "country211":
            p.add_argument("--names", required=True, help="ISO 3166 table: a CSV with the columns name and alpha-2")
        p.add_argument("--split", default="test", choices=SPLITS)
        p.add_argument("--prompt", help=f"class prompt template (default the release's {RELEASE_PROMPTS[name]!r})")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(func=zero_shot_command)

    p = subparsers.add_parser("length", help="correlation of the score with description length (the release's cosid.py)")
    add_model_options(p, step_by_recipe=True)
    p.add_argument("--ratings", help="Kreiss et al.'s repository (or its behavioral_data/): the rated descriptions")
    p.add_argument("--images", help="the rated images (with --ratings), or Concadia's (with --data)")
    p.add_argument("--recipe", choices=RECIPES, help="which model of a run and (with --ratings) which descriptions "
                                                     "count, as eval.py blv (default: the run's recipe)")
    p.add_argument("--data", help="a Concadia folder: its split's descriptions (default: the run's, else the toy world's)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=length_command)
