"""Fine-tune CLIP to prefer descriptions over captions (Zur et al. 2024).

    python train.py --objective behavioral --lora-rank 64          # toy world, on a CPU (installed: clip-min-train)
    python train.py --weights ViT-B-32.pt --data concadia/ --objective iit-das
    python train.py --resume runs/latest                        # go on from the checkpoint, as configured
    torchrun --nproc_per_node=8 train.py ...                    # 8 processes share each batch

Every flag is a field of clip_min.train.config.TrainConfig; unset ones take the defaults of the
recipe (--recipe authors, the default with --weights and --data, or paper, the toy world's). With
--resume, unset ones take the run's saved configuration instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..data.toy import toy_world_dir
from ..errors import USER_ERRORS, one_line
from ..train.config import TrainConfig, as_recorded
from ..train.folder import recorded
from ..train.runlock import resumed_config


def parse_args(argv: list[str] | None = None, prog: str = "train.py") -> TrainConfig:
    # Flags left out are left out of the result (SUPPRESS), so that TrainConfig is the one home of
    # the defaults and a resumed run can tell a flag given from one left to its saved value.
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--recipe", choices=["authors", "paper"],
                   help="whose defaults: the authors' released runs (default with --weights/--data) or the paper's "
                        "text (default on the toy world); docs/12-two-recipes.md")
    p.add_argument("--objective", choices=["clip", "behavioral", "iit-das", "joint"])
    p.add_argument("--finetune", choices=["lora", "full"])
    p.add_argument("--lora-rank", type=int, help="LoRA rank r (authors: 128 behavioral, 64 iit-das/joint; paper: 64 and "
                                                 "128; toy: 64)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha; scaling = alpha / r (default: r)")
    p.add_argument("--lora-dropout", type=float)
    p.add_argument("--lora-targets", choices=["qv", "attn", "all-linear"])
    p.add_argument("--towers", choices=["text", "both"],
                   help="train the text tower only, or both (default: both for the paper's full fine-tuning)")
    p.add_argument("--layer", type=int, help="text block whose output is intervened on (default 10; toy: second to last)")
    p.add_argument("--intervention-size", type=int, help="k, rotated coordinates interchanged (default 256; toy: width/2)")
    p.add_argument("--joint-alpha", type=float, help="a in Eq. 5, weight of the IIT loss")
    p.add_argument("--lr", type=float, help="learning rate (default per objective, see README)")
    p.add_argument("--rotation-lr", type=float, help="the DAS rotation's learning rate (iit-das, joint; default: --lr)")
    p.add_argument("--l2", type=float, help="L2 penalty, Adam weight decay")
    p.add_argument("--epochs", type=int)
    p.add_argument("--iit-samples", type=int,
                   help="iit-das, joint: triplets per epoch (default 100000 as the paper; toy: the training split)")
    p.add_argument("--trade-off-a", type=float,
                   help="a in Appendix C's a * accuracy + (1 - a) * transfer score, which selects the step kept")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="rows per step (authors: 6 images behavioral, 12 one-way rows "
                                                  "iit-das/joint; paper: 12 images)")
    p.add_argument("--iit-rows", choices=["pairs", "one-way"],
                   help="an IIT-DAS row: one image with both directions (paper) or one direction (authors)")
    p.add_argument("--triplets", choices=["stream", "fixed"],
                   help="IIT-DAS triplets: the reshuffled split (paper) or one draw with replacement, seed 42, for "
                        "every seed and epoch (authors)")
    p.add_argument("--val-images", type=int,
                   help="validation images drawn once with seed 42 (authors: 5000); 0: the whole split (paper)")
    p.add_argument("--logit-scale", choices=["fixed", "trained"],
                   help="full fine-tuning: keep the temperature fixed (paper) or train it (authors)")
    p.add_argument("--orthogonal-map", choices=["cayley", "matrix_exp"],
                   help="the rotation's map (authors: matrix_exp; paper: cayley)")
    p.add_argument("--shuffle", choices=["every-epoch", "once"],
                   help="a new order of the rows every epoch (paper) or one order read in every epoch (authors)")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast: auto is bf16 (or fp16) on CUDA, off on a CPU (paper); off is fp32 (authors)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--weights", help="OpenAI (.pt) or Hugging Face CLIP weights; default: the toy world's base")
    p.add_argument("--data", help="Concadia folder (wiki_split.json and resized/); default: the toy world")
    p.add_argument("--images", help="Concadia's image folder, if not DATA/resized")
    p.add_argument("--transfer", nargs="*", help="transfer task folders (Food-101, CIFAR-100 or ImageNet layout)")
    p.add_argument("--prompt", choices=["paper", "photo", "picture", "authors"],
                   help="zero-shot prompts (paper: 'An image of {}'; authors: each task's, see transfer.AUTHORS_PROMPTS)")
    p.add_argument("--out", help="run folder (default runs/latest, or the --resume folder)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps")
    p.add_argument("--eval-schedule", choices=["run", "epoch"],
                   help="count --eval-every over the run (paper) or from the first batch of each epoch (authors)")
    p.add_argument("--checkpoint-every", type=int,
                   help="write checkpoint.pt every N steps and at the end (default: --eval-every)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out; its files stay until this run writes their replacements")
    p.add_argument("--resume", metavar="DIR",
                   help="go on with the run in DIR from its checkpoint, with its saved configuration; "
                        "flags given must agree with it, except how long, how often and on which device")
    return config_from_flags(vars(p.parse_args(argv)))


def config_from_flags(given: dict) -> TrainConfig:
    """The TrainConfig of the flags given (by field name), as train.py reads them; the Python API's fit too.

    A flag left out takes TrainConfig's default, or with --resume the run's saved value.
    """
    given = dict(given)
    if given.get("objective") == "clip":
        given.setdefault("finetune", "full")  # pretraining trains every weight; --finetune lora is refused
    if "transfer" in given:
        given["transfer"] = tuple(given["transfer"] or ())
    if given.get("resume"):
        given = {**saved_flags(given["resume"]), **given}
    given["out"] = given.get("out") or given.get("resume") or "runs/latest"
    return TrainConfig(**given)


def saved_flags(folder: str) -> dict:
    """The configuration a run in ``folder`` was started with, as TrainConfig fields."""
    if not Path(folder).is_dir():
        return {}  # training.check names the missing folder
    config = as_recorded(resumed_config(folder))
    names = {f.name for f in fields(TrainConfig)} - {"out", "resume", "overwrite"}
    saved = {name: config[name] for name in names if name in config}
    saved["transfer"] = tuple(saved.get("transfer") or ())
    # A toy run's config.json names the toy world's files; None keeps it a toy run (banner, summary).
    if saved.get("data") == str(toy_world_dir() / "concadia"):
        saved["weights"] = saved["data"] = None
    return saved


def interrupted(config: TrainConfig | None, prog: str = "train.py") -> str:
    """What Ctrl-C leaves: where the last checkpoint is and the command that goes on from it."""
    command = f"python {prog}" if prog.endswith(".py") else prog
    out = Path(config.out) if config else None
    own = recorded(out) if out is not None else None  # a checkpoint.pt not in it is of the run --overwrite replaces
    if out is not None and (out / "checkpoint.pt").is_file() and (own is None or "checkpoint.pt" in own):
        return (f"{prog}: interrupted; the last checkpoint is {out / 'checkpoint.pt'}; "
                f"go on with: {command} --resume {out}")
    if out is not None and (out / "config.json").is_file():
        if config.objective == "clip":
            return f"{prog}: interrupted; pretraining writes no checkpoint: start it again with its command and --overwrite"
        return f"{prog}: interrupted before the first checkpoint; go on with: {command} --resume {out} (from step 0)"
    return f"{prog}: interrupted before the run folder was written; start the run again"


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    """train.py: parse the flags, train, and report a user's mistake on one line (exit status 2)."""
    config = None
    try:
        config = parse_args(argv, prog)
        from ..train.pipeline import run

        run(config)
    except USER_ERRORS as err:  # also an unwritable or full disk, a file in the way, an unusable CLIP_MIN_CACHE
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted(config, prog), file=sys.stderr)
        return 130
    return 0


def console() -> int:
    """The installed command, clip-min-train."""
    return main(prog="clip-min-train")
