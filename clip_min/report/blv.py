"""``eval.py blv``: does the model's score agree with blind and low-vision (and sighted) raters? Table 2.

Each rated description is scored against its image, by the cosine of the bare description (the
authors' code) or by CLIPScore, and correlated with its mean rating per question and group of
raters (clip_min/data/ratings.py, clip_min/report/correlation.py), in Table 2's layout. With
``--runs``, each cell is the mean and 95% t interval over seeded runs of one model.

``--recipe`` (default: the run's; plain weights: the authors', the default with real data, the
paper's for the toy base) picks which descriptions count (BLV_RECIPES) and which model of a run
(RECIPE_STEP: Appendix C's selected step, or the last, which the release's cosid.py measures).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.concadia import DataError
from ..files import inside
from ..data.ratings import (ATTENTION_CHECK_IMAGES, DESCRIPTIONS_FILE, DIMENSIONS, Description, Ratings,
                            ratings_folders, read_ratings)
from ..losses import clipscore
from ..train.config import RECIPES
from ..train.features import encode_images
from ..train.runs import RECIPE_STEP, run_recipe
from .correlation import correlate_with_ratings
from .score import CLIPSCORE_PREFIX
from .selection import format_interval, mean_interval
from .session import Session, add_model_options, open_model, print_json, text_features


# Which rated descriptions Table 2 correlates. Ours ties a sighted rating to a BLV-rated
# description by (context, img_id, text) and keeps every image; the authors' cosid.py by the text
# alone, and it drops two images first.
BLV_RECIPES = {"paper": dict(sighted_by="key", drop_images=()),
               "authors": dict(sighted_by="text", drop_images=ATTENTION_CHECK_IMAGES)}


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``blv`` to eval.py's subcommands."""
    p = subparsers.add_parser("blv", help="correlation with blind/low-vision and sighted ratings (Table 2)")
    add_model_options(p, step_by_recipe=True)
    p.add_argument("--recipe", choices=RECIPES, help="which descriptions count and which step of a run (default: the "
                                                     "run's recipe; plain weights: authors, the toy base: paper)")
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


def description_scores(session: Session, ratings: Ratings, images: Path, kind: str) -> tuple[dict[Description, float], Counter]:
    """The model's score for every rated description with its image, and counts of those left out."""
    keys = sorted({k for means in ratings.means.values() for k in means})
    skipped: Counter = Counter()
    usable = []
    for key in keys:
        file = ratings.image_files.get(key[1])
        path = None if file is None else inside(images, file)
        if file is None:
            skipped[f"descriptions whose img_id has no img_file in {DESCRIPTIONS_FILE}"] += 1
        elif path is None:
            skipped["descriptions whose img_file is an unsafe path (it leaves the image folder)"] += 1
        elif not os.path.isfile(path):
            skipped["descriptions whose image file is missing"] += 1
        else:
            usable.append((key, path))
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
    """Table 2 for one model: {dimension: {group: correlate_with_ratings(...)}}, what was left out, descriptions scored."""
    scores, skipped = description_scores(session, ratings, images, kind)
    cells = {dim: {group: correlate_with_ratings(scores, ratings.means[dim, group]) for group in ratings.groups
                   if (dim, group) in ratings.means} for dim in DIMENSIONS}
    return cells, skipped, len(scores)


def blv_recipe(args: argparse.Namespace) -> str:
    """--recipe, else the run's, else train.py's rule: the authors' with real weights, the paper's on the toy base."""
    runs = getattr(args, "runs", None)
    run = args.run or (runs[0] if runs else None)
    if args.recipe is not None:
        return args.recipe
    if run is not None:
        return run_recipe(run)
    return "paper" if args.weights is None else "authors"


def blv_command(args: argparse.Namespace) -> int:
    recipe = blv_recipe(args)
    args.step = args.step or RECIPE_STEP[recipe]
    folder, images = ratings_folders(args.ratings, args.images)
    ratings = read_ratings(folder, **BLV_RECIPES[recipe])
    if not images.is_dir():
        raise DataError(f"image folder not found: {images}; pass --images the folder holding the rated images")
    if args.runs:
        return blv_over_runs(args, ratings, images)
    session = open_model(args)
    cells, skipped, n_scored = blv_cells(session, ratings, images, args.score)
    for reason, n in (ratings.skipped + skipped).items():
        print(f"left out: {n} {reason}", file=sys.stderr)
    if args.json:
        print_json({"score": args.score, "recipe": recipe, "step": args.step, "descriptions_scored": n_scored,
                    "cells": cells, "skipped": dict(ratings.skipped + skipped)})
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
    print(f"\ndescriptions correlated (overall): {counts}; the {recipe} recipe's descriptions"
          + (f", the run's {args.step} step" if args.run else ""))
    return 0


def blv_over_runs(args: argparse.Namespace, ratings: Ratings, images: Path) -> int:
    """Table 2 per model over seeds: each cell's Pearson r, mean and 95% t interval over the runs."""
    if args.run is not None or args.weights is not None:
        raise ValueError("give --runs (seeded runs of one model), or --run or --weights, not several")
    per_run = []
    for folder in args.runs:
        args.run = folder
        per_run.append(blv_cells(open_model(args), ratings, images, args.score)[0])
    summary = {dim: {group: [c[dim][group]["pearson"] for c in per_run] for group in ratings.groups
                     if group in per_run[0][dim]} for dim in DIMENSIONS}
    if args.json:
        print_json({"score": args.score, "step": args.step, "runs": [str(r) for r in args.runs], "pearson": summary})
        return 0
    print(f"\nPearson r between the model's score and the mean rating per description, mean and 95% t interval "
          f"over {len(per_run)} runs, each at its {args.step} step:\n")
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
