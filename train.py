"""Fine-tune CLIP to prefer descriptions over captions (Zur et al. 2024).

    python train.py --objective behavioral --lora-rank 64          # toy world, on a CPU
    python train.py --weights ViT-B-32.pt --data concadia/ --objective iit-das
    python train.py --resume runs/latest ...                    # the same flags: go on from the checkpoint
    torchrun --nproc_per_node=8 train.py ...                    # 8 processes share each batch

Every flag is a field of clip_min.training.TrainConfig; unset ones take the paper's defaults.
"""

from __future__ import annotations

import argparse
import sys

from clip_min.data import DataError
from clip_min.training import TrainConfig
from clip_min.weights import WeightsError


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", default="behavioral", choices=["clip", "behavioral", "iit-das", "joint"])
    p.add_argument("--finetune", default="lora", choices=["lora", "full"])
    p.add_argument("--lora-rank", type=int, help="LoRA rank r (default 64 behavioral, 128 iit-das/joint)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha; scaling = alpha / r (default: r)")
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--lora-targets", default="attn", choices=["qv", "attn", "all-linear"])
    p.add_argument("--towers", default="text", choices=["text", "both"], help="train the text tower only (default) or both")
    p.add_argument("--layer", type=int, help="text block whose output is intervened on (default 10; toy: second to last)")
    p.add_argument("--intervention-size", type=int, help="k, rotated coordinates interchanged (default 256; toy: width/2)")
    p.add_argument("--joint-alpha", type=float, default=0.5, help="a in Eq. 5, weight of the IIT loss")
    p.add_argument("--lr", type=float, help="learning rate (default per objective, see README)")
    p.add_argument("--rotation-lr", type=float, help="the DAS rotation's learning rate (iit-das, joint; default: --lr)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 penalty, Adam weight decay")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iit-samples", type=int,
                   help="iit-das, joint: triplets per epoch (default 100000 as the paper; toy: the training split)")
    p.add_argument("--trade-off-a", type=float, default=0.9,
                   help="a in Appendix C's a * accuracy + (1 - a) * transfer score, which selects the step kept")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--weights", help="OpenAI (.pt) or Hugging Face CLIP weights; default: the toy world's base")
    p.add_argument("--data", help="Concadia folder (wiki_split.json and resized/); default: the toy world")
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--transfer", nargs="*", default=[], help="transfer task folders (Food-101, CIFAR-100 or ImageNet layout)")
    p.add_argument("--prompt", default="paper", choices=["paper", "photo", "picture"], help="zero-shot prompt template")
    p.add_argument("--out", help="run folder (default runs/latest, or the --resume folder)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps")
    p.add_argument("--checkpoint-every", type=int,
                   help="write checkpoint.pt every N steps and at the end (default: --eval-every)")
    p.add_argument("--resume", metavar="DIR",
                   help="go on with the run in DIR from its checkpoint; give the flags it started with")
    args = vars(p.parse_args(argv))
    args["transfer"] = tuple(args["transfer"])
    args["out"] = args["out"] or args["resume"] or "runs/latest"
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    from clip_min.pipeline import run

    try:
        run(config)
    except (ValueError, FileNotFoundError, DataError, WeightsError, FloatingPointError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
