"""``eval.py score``: CLIPScore (Hessel et al. 2021) and C = e^t cos for any image-text pairs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from ..data.concadia import DataError
from ..files import UnreadableFile, inside, read_text_whole
from ..data.ratings import read_csv
from ..images import ImageLoadError, load_image
from ..losses import clipscore, score
from ..tokenizer import EMPTY_TEXT, empty_once_cleaned
from ..train.features import encode_images
from .session import add_model_options, open_model, text_features

CLIPSCORE_PREFIX = "A photo depicts "  # Hessel et al. 2021 prefix every text with it
# A pairs line is an image path and a sentence, about 200 bytes: 1 GiB is five million pairs.
MAX_PAIRS_BYTES = 1 << 30


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score`` to eval.py's subcommands."""
    p = subparsers.add_parser("score", help="CLIPScore and C = e^t cos for image-text pairs")
    add_model_options(p)
    p.add_argument("--image", help="one image file (with --text)")
    p.add_argument("--text", help="one text (with --image)")
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


def score_command(args: argparse.Namespace) -> int:
    if args.pairs is not None and (args.image is not None or args.text is not None):
        raise ValueError("give --image and --text, or --pairs, not both")
    if args.pairs is None and (args.image is None or args.text is None):
        raise ValueError("give --image and --text together, or --pairs FILE")
    if args.pairs is None:
        if empty_once_cleaned(args.text):
            raise DataError(f"--text {args.text!r} is empty once cleaned ({EMPTY_TEXT}); give a text with words")
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
