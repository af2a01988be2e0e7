"""Measure a CLIP model, base or fine-tuned, as the paper does: `python eval.py --help` lists the commands.

The command lives in clip_min/cli/eval.py; installed with pip, it is also `clip-min-eval`.
"""

import sys

from clip_min.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
