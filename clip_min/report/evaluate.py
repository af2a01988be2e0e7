"""eval.py's measurements of a CLIP model, base or fine-tuned: the paper's Table 1 and 2 numbers.

    concadia   share of Concadia images whose description outscores their caption (Desc>Cap),
               with a bootstrap 95% interval
    transfer   zero-shot macro-F1 on Food-101, CIFAR-100 and ImageNet (or the toy tasks)
    blv        correlation of the model's score with blind and low-vision (and sighted)
               raters' judgements of descriptions (Kreiss et al. 2022a), Table 2's layout
    score      CLIPScore and C for any image-text pairs
    export     a run's model with its LoRA merged in, as OpenAI or Hugging Face weights

Each command takes the model options (``--weights``, ``--run``, ``--device``, ``--amp``) and
prints its result on stdout, one line or a table (``--json`` for JSON); notes on what was
skipped or loaded go to stderr. Errors the user can fix raise ValueError (or its subclasses
DataError, RunError, WeightsError) with a one-line message that eval.py prints.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from ..data.concadia import DataError
from ..train.features import encode_images
from ..files import content_fingerprint
from ..lora import merge_lora, unmerge_lora
from ..losses import clipscore, score
from ..metrics import bootstrap_interval, preference_accuracy
from ..model import CLIP
from ..images import ImageLoadError, load_image
from ..train.runs import LoadedRun, add_step_option, load_model
from ..tokenizer import get_tokenizer
from ..train.device import mixed_precision, resolve_device
from ..train.evaluation import load_split, split_scores
from ..data.transfer import PROMPTS, class_text_features, encode_task, read_task, zero_shot_f1
from ..weights import save_clip, save_hf

CLIPSCORE_PREFIX = "A photo depicts "  # Hessel et al. 2021 prefix every text with it


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to eval.py's parser; each handler returns an exit code."""
    p = subparsers.add_parser("concadia", help="Desc>Cap: share of images whose description outscores their caption")
    add_model_options(p)
    p.add_argument("--data", help="Concadia folder (wiki_split.json, resized/); default: the run's, else the toy world's")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=concadia_command)

    p = subparsers.add_parser("transfer", help="zero-shot macro-F1 on classification tasks")
    add_model_options(p)
    p.add_argument("--task", nargs="+", metavar="PATH",
                   help="task folders: Food-101, CIFAR-100 (python version) or ImageNet val in class folders; "
                        "default: the run's, else the toy world's")
    p.add_argument("--prompt", default="paper", choices=sorted(PROMPTS), help="class prompt template (see transfer.PROMPTS)")
    p.add_argument("--split", default="test", help="Food-101 and CIFAR-100 split file (ImageNet folders are the split)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=transfer_command)

    p = subparsers.add_parser("blv", help="correlation with blind/low-vision and sighted ratings (Table 2)")
    add_model_options(p)
    p.add_argument("--ratings", required=True,
                   help="elisakreiss/contextual-description-evaluation, or its behavioral_data/ folder")
    p.add_argument("--images", help="folder of the rated images, named as the img_file column; default: RATINGS/images, "
                                    "else the repository's behavioral_experiments/evaluation_sighted/stimuli/")
    p.add_argument("--runs", nargs="+", metavar="DIR",
                   help="seeded runs of one model (instead of --run): each cell is their mean and 95%% t interval")
    p.add_argument("--score", default="cosine", choices=["cosine", "clipscore"],
                   help="cosine of the bare description (the authors' code) or CLIPScore")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=blv_command)

    p = subparsers.add_parser("score", help="CLIPScore and C = e^t cos for image-text pairs")
    add_model_options(p)
    p.add_argument("--image", help="one image file (with --text)")
    p.add_argument("--text", help="one text (with --image)")
    p.add_argument("--pairs", help="a .csv or .jsonl file with image and text per row; "
                                   "relative image paths are taken from the file's folder")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(func=score_command)

    p = subparsers.add_parser("export", help="write a run's model, LoRA merged, as OpenAI or Hugging Face weights")
    add_model_options(p)
    p.add_argument("--format", required=True, choices=["openai", "hf"],
                   help="openai: one state-dict file for clip.load; hf: a folder for CLIPModel.from_pretrained")
    p.add_argument("--out", required=True, help="file (openai) or folder (hf) to write")
    p.set_defaults(func=export_command)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options every command shares: which model, on which device, in which precision."""
    p.add_argument("--weights", help="OpenAI (.pt) or Hugging Face CLIP weights; default: the toy world's base")
    p.add_argument("--run", help="a train.py run folder: its base weights with its adapters, or its weights.pt")
    add_step_option(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="autocast (auto: bf16/fp16 on CUDA, off on CPU)")


# ---- the model a command measures ----------------------------------------------------------


@dataclass
class Session:
    """A loaded model and how to run it."""

    loaded: LoadedRun
    device: str
    autocast: object  # a context-manager factory: nullcontext or a partial torch.autocast
    vision_id: str  # identity of the vision tower's weights, the key of cached image features

    @property
    def model(self) -> CLIP:
        return self.loaded.model


def open_model(args: argparse.Namespace) -> Session:
    if args.weights is not None and args.run is not None:
        raise ValueError("give --weights or --run, not both: a run folder names its own base weights")
    device = resolve_device(args.device)
    autocast, _ = mixed_precision(args.amp, device)
    with notes_to_stderr():
        loaded = load_model(args.weights, args.run, device, args.step)
    return Session(loaded, device, autocast, vision_id(loaded))


def notes_to_stderr():
    """Route the package's progress notes to stderr, so that stdout holds only the result."""
    return contextlib.redirect_stdout(sys.stderr)


def vision_id(loaded: LoadedRun) -> str:
    """Fingerprint of the weights the vision tower came from.

    A LoRA run on the text tower leaves the vision tower as it was, so its image features are
    the base model's and the cache built for the base serves it too.
    """
    config = loaded.config
    base = config.get("weights")
    if "finetune" not in config:  # plain weights, not a run
        return content_fingerprint(base)
    vision_frozen = config["finetune"] == "lora" and config.get("towers", "text") == "text" and config.get("objective") != "clip"
    if vision_frozen:
        return content_fingerprint(base)
    parts = [content_fingerprint(base)] if base else []
    own = ["selected.pt"] if isinstance(loaded.step, int) else ["weights.pt", "adapters.pt"]
    parts += [content_fingerprint(loaded.folder / name) for name in own if (loaded.folder / name).is_file()]
    return "|".join(parts)


@torch.no_grad()
def text_features(session: Session, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Text features (N, embed_dim), float32 on the CPU; texts past the context are cut, with a note."""
    context = session.model.config.context_length
    tokens, cut = get_tokenizer().tokenize_counting_cuts(texts, context)  # (N, context)
    if cut:
        print(f"{cut} of {len(texts)} texts are longer than {context} tokens and were cut", file=sys.stderr)
    out = []
    for start in range(0, len(texts), batch_size):
        with session.autocast():
            out.append(session.model.encode_text(tokens[start : start + batch_size].to(session.device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, session.model.config.embed_dim)


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))


# ---- concadia: Desc>Cap ----------------------------------------------------------------------


def concadia_command(args: argparse.Namespace) -> int:
    session = open_model(args)
    data, images = args.data, args.images
    if data is None:
        data = session.loaded.config.get("data")
        images = images or session.loaded.config.get("images")
    if data is None:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            data = toy_world()[0] / "concadia"
        print(f"no --data: measuring on the toy world's Concadia ({data})", file=sys.stderr)
    with notes_to_stderr():
        split = load_split(session.model, Path(data), images, args.split, session.vision_id, session.device, session.autocast)
    c_des, c_cap = split_scores(session.model, split, session.device, session.autocast)
    accuracy = preference_accuracy(c_des, c_cap)
    low, high = bootstrap_interval((c_des > c_cap).float().numpy())
    n = len(split.examples)
    if args.json:
        print_json({"split": args.split, "images": n, "accuracy": accuracy, "ci95": [low, high], "data": str(data)})
    else:
        print(f"Concadia {args.split}: C(im, description) > C(im, caption) for {accuracy:.1%} of {n} images "
              f"(95% bootstrap interval {low:.1%} to {high:.1%})")
    return 0


# ---- transfer: zero-shot macro-F1 ---------------------------------------------------------


def transfer_command(args: argparse.Namespace) -> int:
    session = open_model(args)
    folders = args.task or session.loaded.config.get("transfer")
    if not folders:
        from ..train.pipeline import toy_world

        with notes_to_stderr():
            folders = toy_world()[1]
        print("no --task: measuring on the toy world's transfer tasks", file=sys.stderr)
    template = PROMPTS[args.prompt]
    results = {}
    for folder in folders:
        task = read_task(folder, args.split)
        features, ok = encode_task(session.model, task, session.vision_id, session.device, session.autocast)
        if not ok.any():
            raise DataError(f"{folder}: none of its {len(ok)} images could be decoded")
        if not ok.all():
            print(f"{task.name}: {int((~ok).sum())} of {len(ok)} images did not decode and are left out", file=sys.stderr)
        labels = [label for label, good in zip(task.labels, ok.tolist()) if good]
        with session.autocast():
            classes = class_text_features(session.model, task.classes, template, session.device)
        f1 = zero_shot_f1(features[ok].to(session.device), labels, classes.float())
        results[task.name] = {"macro_f1": f1, "images": len(labels), "classes": len(task.classes),
                              "undecodable": int((~ok).sum()), "path": str(folder)}
    if args.json:
        print_json({"prompt": template, "tasks": results})
    else:
        for name, r in results.items():
            print(f"{name}: macro-F1 {r['macro_f1']:.1%} on {r['images']} images, {r['classes']} classes (prompt {template!r})")
    return 0


# ---- blv: agreement with blind and low-vision raters (Kreiss et al. 2022a) ------------------

BLV_FILE = "blv_data_criticaltrials.csv"
SIGHTED_FILE = "sighted_data_criticaltrials.csv"
DESCRIPTIONS_FILE = "all_descriptions.csv"
DIMENSIONS = {  # the paper's name -> the question's column in the released files
    "overall": "q_overall",
    "imaginability": "q_reconstructivity",
    "relevance": "q_relevance",
    "irrelevance": "q_irrelevance",
}
# Table 2's groups: which file, and which suffix its rating columns carry there. Sighted raters
# answered once before seeing the image (.preimg) and again after (.postimg).
GROUPS = {
    "BLV": (BLV_FILE, ""),
    "sighted, no image": (SIGHTED_FILE, ".preimg"),
    "sighted, with image": (SIGHTED_FILE, ".postimg"),
}
# Sighted raters were asked to imagine the image only before they saw it.
NOT_ASKED = {("imaginability", "sighted, with image")}
KEY_COLUMNS = ("context", "img_id", "description")

Description = tuple[str, str, str]  # (context, img_id, description text with whitespace collapsed)


@dataclass
class Ratings:
    """Mean ratings per description, for every (dimension, group) cell of Table 2."""

    means: dict[tuple[str, str], dict[Description, float]]
    image_files: dict[str, str]  # img_id -> img_file
    skipped: Counter = field(default_factory=Counter)  # reason -> rows (or ratings) left out
    groups: list[str] = field(default_factory=list)  # the groups whose file was found


def rating_columns(group: str) -> dict[str, str]:
    """dimension -> the CSV column holding it for ``group``."""
    suffix = GROUPS[group][1]
    return {dim: column + suffix for dim, column in DIMENSIONS.items() if (dim, group) not in NOT_ASKED}


def ratings_folders(ratings: str | Path, images: str | Path | None) -> tuple[Path, Path]:
    """The behavioral_data/ folder and the rated images' folder, from the repository's root or that folder."""
    ratings = Path(ratings)
    if (ratings / "behavioral_data").is_dir():  # the repository's root
        ratings = ratings / "behavioral_data"
    if images is not None:
        return ratings, Path(images)
    candidates = [ratings / "images", ratings.parent / "behavioral_experiments" / "evaluation_sighted" / "stimuli"]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        raise DataError(f"no rated images in {candidates[0]} or {candidates[1]}; pass --images the folder holding them")
    return ratings, found


def read_ratings(folder: str | Path) -> Ratings:
    """Read the released CSV files under ``folder`` and average each description's ratings.

    A rating that is empty, NA or not a number is left out of its cell's mean and counted. As in
    Kreiss et al.'s own analysis, the sighted groups keep only the descriptions BLV participants
    rated (68 in the release), when the BLV file is there; the others are counted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"ratings folder not found: {folder}; pass --ratings the behavioral_data/ folder")
    tables: dict[str, list[dict]] = {}
    for name in (BLV_FILE, SIGHTED_FILE):
        if (folder / name).is_file():
            groups = [g for g, (file, _) in GROUPS.items() if file == name]
            needed = list(KEY_COLUMNS) + [c for g in groups for c in rating_columns(g).values()]
            tables[name] = read_csv(folder / name, needed)
    if not tables:
        raise DataError(f"{folder}: neither {BLV_FILE} nor {SIGHTED_FILE} is there; pass --ratings the behavioral_data/ folder")

    ratings = Ratings(means={}, image_files={})
    keyed: dict[str, list[tuple[Description, dict]]] = {}
    for name, rows in tables.items():
        keyed[name] = [(description_key(row), row) for row in rows]
        unkeyed = sum(key is None for key, _ in keyed[name])
        if unkeyed:
            ratings.skipped[f"rows of {name} without img_id or description"] += unkeyed
    for group, (name, _) in GROUPS.items():
        if name not in tables:
            continue
        ratings.groups.append(group)
        for dim, column in rating_columns(group).items():
            values: dict[Description, list[float]] = defaultdict(list)
            for key, row in keyed[name]:
                value = parse_rating(row[column])
                if key is not None and value is None:
                    ratings.skipped[f"{group} {dim} ratings missing or not a number"] += 1
                elif key is not None:
                    values[key].append(value)
            ratings.means[dim, group] = {key: float(np.mean(v)) for key, v in values.items()}

    blv_rated = {key for (_, group), means in ratings.means.items() if group == "BLV" for key in means}
    if blv_rated:
        for (dim, group), means in ratings.means.items():
            if group != "BLV":
                ratings.means[dim, group] = {k: v for k, v in means.items() if k in blv_rated}
        sighted_keys = {key for key, _ in keyed.get(SIGHTED_FILE, []) if key is not None}
        if sighted_keys - blv_rated:
            ratings.skipped["sighted-rated descriptions no BLV participant rated (Kreiss et al. leave them out)"] += \
                len(sighted_keys - blv_rated)
    # The BLV file does not name the image files; all_descriptions.csv and the sighted file do.
    mapping_rows = read_csv(folder / DESCRIPTIONS_FILE, ["img_id", "img_file"]) if (folder / DESCRIPTIONS_FILE).is_file() else []
    for row in mapping_rows + [r for r in tables.get(SIGHTED_FILE, []) if r.get("img_file")]:
        if row.get("img_id") and row.get("img_file"):
            ratings.image_files.setdefault(row["img_id"].strip(), row["img_file"].strip())
    return ratings


def read_csv(path: Path, needed: list[str]) -> list[dict]:
    """Rows of a CSV file as dicts; a file without the needed columns is an error naming them."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; is this the released {path.name}?")
            return list(reader)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; is this the released CSV file?") from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None


def description_key(row: dict) -> Description | None:
    img_id, text = (row.get("img_id") or "").strip(), " ".join((row.get("description") or "").split())
    if not img_id or not text:
        return None
    return (row.get("context") or "").strip(), img_id, text


def parse_rating(value: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def correlate(scores: dict[Description, float], means: dict[Description, float]) -> dict:
    """Pearson's r and Spearman's rho (with p-values) between model scores and mean ratings.

    Only descriptions with both a score and a mean count; fewer than 3 gives NaNs.
    """
    keys = [k for k in means if k in scores]
    result = {"n": len(keys), "pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan, "spearman_p": math.nan}
    if len(keys) < 3:
        return result
    x = np.array([scores[k] for k in keys])
    y = np.array([means[k] for k in keys])
    with warnings.catch_warnings():  # a constant input has no correlation: scipy warns and returns NaN
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    result.update(pearson=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                  spearman=float(spearman.statistic), spearman_p=float(spearman.pvalue))
    return result


def description_scores(session: Session, ratings: Ratings, images: Path, kind: str) -> tuple[dict[Description, float], Counter]:
    """The model's score for every rated description with its image, and counts of those left out."""
    keys = sorted({k for means in ratings.means.values() for k in means})
    skipped: Counter = Counter()
    usable = []
    for key in keys:
        file = ratings.image_files.get(key[1])
        if file is None:
            skipped[f"descriptions whose img_id has no img_file in {DESCRIPTIONS_FILE}"] += 1
        elif not (images / file).is_file():
            skipped["descriptions whose image file is missing"] += 1
        else:
            usable.append((key, images / file))
    paths = sorted({path for _, path in usable})
    features, ok = encode_images(session.model, paths, session.vision_id, device=session.device, autocast=session.autocast)
    decoded = {path: features[i] for i, path in enumerate(paths) if ok[i]}
    undecodable = [key for key, path in usable if path not in decoded]
    if undecodable:
        skipped[f"descriptions whose image does not decode ({len(paths) - len(decoded)} images)"] += len(undecodable)
    usable = [(key, path) for key, path in usable if path in decoded]
    if not usable:
        raise DataError(f"no rated description has a readable image in {images}; pass --images the folder holding the img_file images")
    prefix = CLIPSCORE_PREFIX if kind == "clipscore" else ""
    text = text_features(session, [prefix + key[2] for key, _ in usable])
    image = torch.stack([decoded[path] for _, path in usable])
    values = clipscore(image, text) if kind == "clipscore" else F.cosine_similarity(image, text, dim=-1)
    return {key: float(v) for (key, _), v in zip(usable, values)}, skipped


def blv_cells(session: Session, ratings: Ratings, images: Path, kind: str = "cosine") -> tuple[dict, Counter, int]:
    """Table 2 for one model: {dimension: {group: correlate(...)}}, what was left out, descriptions scored."""
    scores, skipped = description_scores(session, ratings, images, kind)
    cells = {dim: {group: correlate(scores, ratings.means[dim, group]) for group in ratings.groups
                   if (dim, group) in ratings.means} for dim in DIMENSIONS}
    return cells, skipped, len(scores)


def blv_command(args: argparse.Namespace) -> int:
    folder, images = ratings_folders(args.ratings, args.images)
    ratings = read_ratings(folder)
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}; pass --images the folder holding the rated images")
    if args.runs:
        return blv_over_runs(args, ratings, images)
    session = open_model(args)
    cells, skipped, n_scored = blv_cells(session, ratings, images, args.score)
    for reason, n in (ratings.skipped + skipped).items():
        print(f"left out: {n} {reason}", file=sys.stderr)
    if args.json:
        print_json({"score": args.score, "descriptions_scored": n_scored, "cells": cells,
                    "skipped": dict(ratings.skipped + skipped)})
        return 0
    label = "cosine of the bare description" if args.score == "cosine" else "CLIPScore"
    for stat, name in (("pearson", "Pearson r"), ("spearman", "Spearman rho")):
        print(f"\n{name} (p) between the model's {label} and the mean rating per description:\n")
        print("| dimension | " + " | ".join(ratings.groups) + " |")
        print("|---" * (len(ratings.groups) + 1) + "|")
        for dim in DIMENSIONS:
            row = [format_cell(cells[dim].get(group), stat) for group in ratings.groups]
            print(f"| {dim} | " + " | ".join(row) + " |")
    counts = ", ".join(f"{group} {cells['overall'][group]['n']}" for group in ratings.groups)
    print(f"\ndescriptions correlated (overall): {counts}")
    return 0


def blv_over_runs(args: argparse.Namespace, ratings: Ratings, images: Path) -> int:
    """Table 2 per model over seeds: each cell's Pearson r, mean and 95% t interval over the runs."""
    from .selection import format_interval, mean_interval  # selection draws on this module

    if args.run is not None or args.weights is not None:
        raise ValueError("give --runs (seeded runs of one model), or --run or --weights, not several")
    per_run = []
    for folder in args.runs:
        args.run = folder
        per_run.append(blv_cells(open_model(args), ratings, images, args.score)[0])
    summary = {dim: {group: [c[dim][group]["pearson"] for c in per_run] for group in ratings.groups
                     if group in per_run[0][dim]} for dim in DIMENSIONS}
    if args.json:
        print_json({"score": args.score, "runs": [str(r) for r in args.runs], "pearson": summary})
        return 0
    print(f"\nPearson r between the model's score and the mean rating per description, mean and 95% t interval "
          f"over {len(per_run)} runs at their selected steps ({args.step}):\n")
    print("| dimension | " + " | ".join(ratings.groups) + " |")
    print("|---" * (len(ratings.groups) + 1) + "|")
    for dim in DIMENSIONS:
        row = []
        for group in ratings.groups:
            values = [v for v in summary[dim].get(group, []) if not math.isnan(v)]
            row.append("not asked" if group not in summary[dim] else
                       format_interval(mean_interval(values) if values else None, percent=False))
        print(f"| {dim} | " + " | ".join(row) + " |")
    return 0


def format_cell(cell: dict | None, stat: str) -> str:
    if cell is None:
        return "not asked"
    if math.isnan(cell[stat]):
        return f"n/a (n={cell['n']})"
    return f"{cell[stat]:.2f} ({cell[stat + '_p']:.2g})"


# ---- score: CLIPScore and C for any pairs --------------------------------------------------


def read_pairs(path: Path) -> tuple[list[tuple[Path, str]], Counter]:
    """(image path, text) per usable row of a .csv or .jsonl file, and counts of bad rows."""
    if not path.is_file():
        raise FileNotFoundError(f"--pairs {path}: no such file")
    skipped: Counter = Counter()
    if path.suffix.lower() == ".csv":
        rows = read_csv(path, ["image", "text"])
    elif path.suffix.lower() == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                skipped["lines that are not JSON"] += 1
    else:
        raise DataError(f"--pairs {path}: expected a .csv or .jsonl file with image and text per row")
    pairs = []
    for row in rows:
        image, text = (row.get("image"), row.get("text")) if isinstance(row, dict) else (None, None)
        if not isinstance(image, str) or not image.strip() or not isinstance(text, str) or not text.strip():
            skipped["rows without an image or a text"] += 1
            continue
        pairs.append((path.parent / image.strip(), text.strip()))
    return pairs, skipped


def score_command(args: argparse.Namespace) -> int:
    if args.pairs is not None and (args.image is not None or args.text is not None):
        raise ValueError("give --image and --text, or --pairs, not both")
    if args.pairs is None and (args.image is None or args.text is None):
        raise ValueError("give --image and --text together, or --pairs FILE")
    if args.pairs is None:
        try:
            load_image(args.image)  # fail on a bad image before loading the model
        except ImageLoadError as err:
            raise DataError(f"--image: {err}") from None
        pairs, skipped = [(Path(args.image), args.text)], Counter()
    else:
        pairs, skipped = read_pairs(Path(args.pairs))
    session = open_model(args)
    paths = [p for p, _ in pairs]
    features, ok = encode_images(session.model, paths, session.vision_id, device=session.device, autocast=session.autocast)
    if not ok.all():
        skipped["rows whose image is missing or does not decode"] += int((~ok).sum())
    keep = ok.nonzero().flatten().tolist()
    if not keep:
        raise DataError(f"--pairs {args.pairs}: no usable row ({', '.join(f'{n} {r}' for r, n in skipped.items())})")
    texts = [pairs[i][1] for i in keep]
    image = features[keep]
    bare, prefixed = text_features(session, texts), text_features(session, [CLIPSCORE_PREFIX + t for t in texts])
    c = score(image, bare, session.model.logit_scale.detach().float().cpu())
    cs = clipscore(image, prefixed)
    for reason, n in skipped.items():
        print(f"left out: {n} {reason}", file=sys.stderr)
    for row, i in enumerate(keep):
        image_path, text = pairs[i]
        if args.json:
            print(json.dumps({"image": str(image_path), "text": text, "clipscore": float(cs[row]), "C": float(c[row])}))
        elif args.pairs is None:
            print(f"CLIPScore {cs[row]:.4f}  C {c[row]:.4f}")
        else:
            print(f"{cs[row]:.4f}\t{c[row]:.4f}\t{image_path}\t{text}")
    return 0


# ---- export: LoRA merged, in OpenAI's or Hugging Face's format ------------------------------


def without_adapters(model: CLIP) -> CLIP:
    """A plain CLIP holding copies of ``model``'s weights as they are now (merged LoRA included)."""
    with torch.device("meta"):
        plain = CLIP(model.config)
    names = set(plain.state_dict())
    state = {name: tensor.detach().clone().cpu() for name, tensor in model.state_dict().items() if name in names}
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.eval()


def export_command(args: argparse.Namespace) -> int:
    if args.run is None and args.weights is None:
        raise ValueError("export needs --run (a train.py run folder), or --weights to convert a checkpoint")
    session = open_model(args)
    model = session.model
    merge_lora(model)  # W <- W + (alpha / r) B A in every adapted layer
    plain = without_adapters(model)
    unmerge_lora(model)
    out = Path(args.out)
    if args.format == "openai":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_clip(plain, out)
    else:
        save_hf(plain, out)
    if session.loaded.rotation is not None:
        print("note: the run's DAS rotation only shapes training and is not part of the exported model", file=sys.stderr)
    print(f"wrote {out} ({args.format} format)")
    return 0
