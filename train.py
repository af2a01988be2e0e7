"""Fine-tune CLIP to prefer descriptions over captions: `python train.py --help` lists the flags.

The command lives in clip_min/cli/train.py; installed with pip, it is also `clip-min-train`.
"""

import sys

from clip_min.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
