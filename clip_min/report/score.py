"""``eval.py score``: CLIPScore (Hessel et al. 2021) and C = e^t cos for any image-text pairs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

from ..data.concadia import DataError
from ..files import UnreadableFile, inside, read_text_whole
from ..data.ratings import read_csv
from ..images import ImageLoadError, load_image
from ..losses import clipscore, score
from ..model import CLIP
from ..tokenizer import EMPTY_TEXT, empty_once_cleaned
from ..train.features import encode_images
from .session import add_model_options, encode_texts, open_model

CLIPSCORE_PREFIX = "A photo depicts "  # Hessel et al. 2021 prefix every text with it
# A pairs line is an image path and a sentence, about 200 bytes: 1 GiB is five million pairs.
MAX_PAIRS_BYTES = 1 << 30


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score`` to eval.py's subcommands."""
    p = subparsers.add_parser("score", help="CLIPScore and C = e^t cos for image-text pairs")
    add_model_options(p)
    p.add_argument("--image", action="append",
                   help="an image file (with --text); repeat it for several: every image is scored with every text")
    p.add_argument("--text", action="append", help="a text (with --image); repeat it for several")
    p.add_argument("--pairs", help="a .csv or .jsonl file with image and text per row; "
                                   "relative image paths are taken from the file's folder")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.set_defaults(func=score_command)


def read_pairs(path: Path) -> tuple[list[tuple[Path, str]], Counter]:
    """(image path, text) per usable row of a .csv or .jsonl file, and counts of bad rows."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"--pairs {path}: no such file")
    skipped: Counter = Counter()
    if path.suffix.lower() == ".csv":
        rows = read_csv(path, ["image", "text"])
    elif path.suffix.lower() == ".jsonl":
        try:
            lines = read_text_whole(path, MAX_PAIRS_BYTES, "pairs file").splitlines()
        except UnreadableFile as err:
            raise DataError(str(err)) from None
        rows = []
        for line in lines:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                skipped["lines that are not JSON"] += 1
            except RecursionError:  # json recurses once per level of nesting
                skipped["lines of JSON nested too deeply"] += 1
    else:
        raise DataError(f"--pairs {path}: expected a .csv or .jsonl file with image and text per row")
    pairs = []
    for row in rows:
        image, text = (row.get("image"), row.get("text")) if isinstance(row, dict) else (None, None)
        if not isinstance(image, str) or not image.strip() or not isinstance(text, str) or not text.strip():
            skipped["rows without an image or a text"] += 1
            continue
        if empty_once_cleaned(text):
            skipped[f"rows whose text is empty once cleaned ({EMPTY_TEXT})"] += 1
            continue
        image_path = inside(path.parent, image.strip())
        if image_path is None:
            skipped["rows whose image is an unsafe path (it leaves the folder of --pairs)"] += 1
            continue
        pairs.append((image_path, text.strip()))
    return pairs, skipped


@torch.no_grad()
def pair_scores(model: CLIP, image_features: torch.Tensor, texts: list[str], device: str,
                autocast) -> tuple[torch.Tensor, torch.Tensor, int]:
    """C = e^t cos(im, text) and CLIPScore of aligned rows: image features (N, D) and N texts -> (N,), (N,);
    and how many texts were cut to the model's context."""
    bare, cut = encode_texts(model, texts, device, autocast)
    prefixed, _ = encode_texts(model, [CLIPSCORE_PREFIX + text for text in texts], device, autocast)
    c = score(image_features, bare, model.logit_scale.detach().float().cpu())
    return c, clipscore(image_features, prefixed), cut


def score_command(args: argparse.Namespace) -> int:
    if args.pairs is not None and (args.image is not None or args.text is not None):
        raise ValueError("give --image and --text, or --pairs, not both")
    if args.pairs is None and (args.image is None or args.text is None):
        raise ValueError("give --image and --text together (each may be repeated), or --pairs FILE")
    if args.pairs is None:
        for text in args.text:
            if empty_once_cleaned(text):
                raise DataError(f"--text {text!r} is empty once cleaned ({EMPTY_TEXT}); give a text with words")
        for image in args.image:
            try:
                load_image(image)  # fail on a bad image before loading the model
            except ImageLoadError as err:
                raise DataError(f"--image: {err}") from None
        pairs, skipped = [(Path(image), text) for image in args.image for text in args.text], Counter()
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
    c, cs, cut = pair_scores(session.model, features[keep], texts, session.device, session.autocast)
    if cut:
        print(f"{cut} of {len(texts)} texts are longer than {session.model.config.context_length} tokens and were cut",
              file=sys.stderr)
    for reason, n in skipped.items():
        print(f"left out: {n} {reason}", file=sys.stderr)
    rows = [(float(cs[row]), float(c[row]), *pairs[i]) for row, i in enumerate(keep)]
    if args.json:
        for clip_score, c_value, image_path, text in rows:
            print(json.dumps({"image": str(image_path), "text": text, "clipscore": clip_score, "C": c_value}))
    elif args.pairs is None:
        print(format_scores(rows))
    else:
        for clip_score, c_value, image_path, text in rows:
            print(f"{clip_score:.4f}\t{c_value:.4f}\t{image_path}\t{text}")
    return 0


def format_scores(rows: list[tuple[float, float, Path, str]]) -> str:
    """A row per (image, text) pair under a header: CLIPScore, C, the image as given, the text."""
    width = max(len("image"), *(len(str(image)) for _, _, image, _ in rows))
    lines = [f"{'CLIPScore':>9}  {'C':>8}  {'image':<{width}}  text"]
    lines += [f"{clip_score:>9.4f}  {c:>8.4f}  {str(image):<{width}}  {text}" for clip_score, c, image, text in rows]
    return "\n".join(lines)
