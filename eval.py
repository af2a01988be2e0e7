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
it computes.
"""

from __future__ import annotations

import argparse
import sys

from clip_min.files import describe_os_error
from clip_min.images import ImageLoadError
from clip_min.report import attribute, blv, evaluate, export, prefer, released, score, search, table1, table3

# The modules that add subcommands, each through add_commands(subparsers), in the order --help lists them.
COMMAND_MODULES = (evaluate, blv, score, export, table1, attribute, table3, search, prefer, released)
# Errors the user can fix: bad paths, data, weights, run folders or option values.
USER_ERRORS = (ValueError, OSError, ImageLoadError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eval.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as err:  # before USER_ERRORS, which include it: a disk, permission or path problem
        print(f"eval.py: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        print(f"eval.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eval.py: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
