"""Measure a CLIP model, base or fine-tuned, as the paper does.

    python eval.py concadia --run runs/latest          # Desc>Cap on Concadia's test split
    python eval.py transfer --run runs/latest --task food-101 cifar-100-python imagenet/val
    python eval.py blv --weights ViT-B-32.pt --ratings behavioral_data --images images
    python eval.py score --run runs/latest --image cat.jpg --text "A cat asleep on a sofa."
    python eval.py export --run runs/latest --format hf --out exported/
    python eval.py flickr8k --run runs/latest --data Flickr8k/      # the release's other evaluations:
    python eval.py sst2 --run runs/latest --data rendered-sst2/     #   clip_min/report/released.py
    python eval.py country211 --run runs/latest --data country211/ --names all.csv
    python eval.py length --run runs/latest --ratings contextual-description-evaluation/

With neither --weights nor --run, the model is the toy world's base CLIP. `python eval.py
COMMAND -h` lists a command's options; each command's module in clip_min/report/ documents what
it computes. Installed with pip, the same command is clip-min-eval.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import USER_ERRORS, one_line
from ..report import attribute, blv, evaluate, export, prefer, released, score, search, table1, table3

# The modules that add subcommands, each through add_commands(subparsers), in the order --help lists them.
COMMAND_MODULES = (evaluate, blv, score, export, table1, attribute, table3, search, prefer, released)


def build_parser(prog: str = "eval.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "eval.py") -> int:
    """eval.py: run one command, and report a user's mistake on one line (exit status 2)."""
    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:  # bad paths, data, weights, run folders or option values; a disk problem
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing was written", file=sys.stderr)
        return 130


def console() -> int:
    """The installed command, clip-min-eval."""
    return main(prog="clip-min-eval")
