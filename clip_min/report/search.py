"""Appendix B's hyperparameter searches: a grid of runs, and the configuration with the best validation accuracy.

    behavioral   full fine-tuning of Eq. 1 over learning rate x L2
    iit-das      full fine-tuning of Eqs. 2-3 over learning rate x intervention block x intervention size
    lora         LoRA over rank x dropout x targets, at the full fine-tuning setting's learning rate
    joint        Eq. 5 over its weight a

Each configuration trains 5 epochs (Appendix B: "within 5 epochs") into a run folder of its own,
OUT/<grid>/<name>; a configuration whose run finished with the same request is skipped, so a
search that stopped goes on where it was. The chosen configuration is the one whose best
validation preference accuracy over its evaluations is highest (the earliest listed on a tie).

The grids are Appendix B's, learning rates included. ``--recipe`` sets everything a grid leaves
alone (what a batch is, the draws, the prompts; see clip_min.train.config). On the toy world the
grids are shrunk to what its small tower takes in minutes on a CPU (TOY_GRIDS), and a run is one
toy epoch; the search says so when it starts.

The dropout axis means here what it says: clip_min's training keeps the model in train mode
between evaluations, so LoRA's dropout acts on every step. In the authors' release it acts on
the first steps only: trainer.py's fit evaluates at batch 0 of the first epoch, its predict()
calls model.eval(), and nothing calls model.train() after it, so peft's LoRA dropout is off from
then to the end of training (docs/12-two-recipes.md). A dropout the release searched over
changed little but the first step.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from ..train import pipeline
from ..train.config import RECIPES, TrainConfig, recipe_setting
from .selection import read_metrics

# Appendix B, each axis as the paper lists it.
GRIDS = {
    "behavioral": dict(objective="behavioral", finetune="full",
                       axes=dict(lr=(1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6, 1e-6, 5e-7), l2=(0.0, 0.1, 0.01, 0.001))),
    "iit-das": dict(objective="iit-das", finetune="full",
                    axes=dict(lr=(1e-5, 5e-6, 1e-6), layer=(6, 8, 10), intervention_size=(32, 64, 128, 256))),
    "lora": dict(objective=None, finetune="lora",
                 axes=dict(lora_rank=(8, 16, 32, 64, 128), lora_dropout=(0.0, 0.1, 0.01),
                           lora_targets=("all-linear", "attn", "qv"))),
    "joint": dict(objective="joint", finetune=None, axes=dict(joint_alpha=(0.2, 0.3, 0.5, 0.7, 0.8))),  # Eq. 5's a
}
# The toy world's text tower has 3 blocks of width 64: blocks 0 and 1, sizes 16 and 32.
TOY_GRIDS = {
    "behavioral": dict(objective="behavioral", finetune="full", axes=dict(lr=(1e-5, 3e-5, 1e-4), l2=(0.0, 0.01))),
    "iit-das": dict(objective="iit-das", finetune="full", axes=dict(lr=(3e-5,), layer=(0, 1), intervention_size=(16, 32))),
    "lora": dict(objective=None, finetune="lora", axes=dict(lora_rank=(8, 64), lora_dropout=(0.0, 0.1),
                                                            lora_targets=("qv", "attn"))),
    "joint": dict(objective="joint", finetune=None, axes=dict(joint_alpha=(0.2, 0.5, 0.8))),
}
EPOCHS = 5  # Appendix B picks by validation accuracy within 5 epochs
SHORT = dict(lr="lr", l2="l2", layer="layer", intervention_size="k", lora_rank="r", lora_dropout="dropout",
             lora_targets="targets", joint_alpha="a")


def configurations(grid: str, toy: bool, objective: str, finetune: str = "lora") -> list[dict]:
    """Every combination of the grid's values, as TrainConfig fields."""
    spec = (TOY_GRIDS if toy else GRIDS)[grid]
    names, values = zip(*spec["axes"].items())
    fixed = dict(objective=spec["objective"] or objective, finetune=spec["finetune"] or finetune)
    return [dict(fixed, **dict(zip(names, combo))) for combo in itertools.product(*values)]


def shown(value) -> str:
    """A grid value as folder names and the table show it: floats in %g form (0.0001, 5e-07, 0)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def folder_name(fields: dict, axes: list[str]) -> str:
    return "_".join(f"{SHORT[name]}{shown(fields[name])}" for name in axes)


def best_val_accuracy(folder: Path) -> tuple[float, int]:
    """The highest validation accuracy the run logged after step 0, and its step."""
    records = [r for r in read_metrics(folder) if r["step"] > 0]
    best = max(records, key=lambda r: (r["val_accuracy"], -r["step"]))
    return best["val_accuracy"], best["step"]


def search_command(args) -> int:
    if args.grid == "lora" and args.objective not in ("behavioral", "iit-das", "joint"):
        raise ValueError("--grid lora searches the adapters of one objective: pass --objective behavioral or iit-das")
    toy = args.weights is None and args.data is None
    spec = (TOY_GRIDS if toy else GRIDS)[args.grid]
    axes = list(spec["axes"])
    if toy:
        print(f"toy world: the {args.grid} grid is shrunk to fit the toy ({', '.join(f'{a} {list(map(shown, v))}' for a, v in spec['axes'].items())}; "
              f"Appendix B's: {', '.join(f'{a} {list(map(shown, v))}' for a, v in GRIDS[args.grid]['axes'].items())})")
    # --amp left unset is the recipe's, written out so that the request stamps say how the runs computed.
    amp = args.amp or recipe_setting(TrainConfig(weights=args.weights, data=args.data, recipe=args.recipe), "amp")
    options = dict(weights=args.weights, data=args.data, transfer=tuple(args.transfer or ()), seed=args.seed,
                   recipe=args.recipe,
                   epochs=args.epochs or (None if toy else EPOCHS), max_steps=args.max_steps,
                   eval_every=args.eval_every, device=args.device, amp=amp)
    rows = []
    for fields in configurations(args.grid, toy, args.objective, args.finetune):
        folder = Path(args.out) / args.grid / folder_name(fields, axes)
        config = TrainConfig(**options, **fields, out=str(folder))
        request = json.dumps({**pipeline.given(options), **fields, **pipeline.mark_full(fields["finetune"])}, sort_keys=True)
        if pipeline.finished(config, request, "search_request.json"):
            print(f"{folder}: finished earlier with the same request; skipped")
        else:
            print(f"\n=== {args.grid} search: {folder_name(fields, axes)} -> {folder}")
            pipeline.run_stamped(config, request, "search_request.json")
        rows.append((fields, folder, *best_val_accuracy(folder)))
    chosen = max(rows, key=lambda row: row[2])  # max keeps the first of a tie
    header = axes + ["best val acc.", "at step", "run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fields, folder, accuracy, step in rows:
        mark = " (chosen)" if fields is chosen[0] else ""
        lines.append("| " + " | ".join([shown(fields[a]) for a in axes]
                                       + [f"{100 * accuracy:.1f}{mark}", str(step), str(folder)]) + " |")
    print(f"\nAppendix B, {args.grid} search ({len(rows)} configurations; validation preference accuracy, percent)\n")
    print("\n".join(lines))
    print("\nchosen: " + ", ".join(f"--{a.replace('_', '-')} {chosen[0][a]}" for a in axes)
          + f" (validation accuracy {100 * chosen[2]:.1f}%)")
    return 0


def add_commands(subparsers) -> None:
    """Add ``search`` to eval.py's subcommands."""
    p = subparsers.add_parser("search", help="Appendix B's searches: a grid of training runs, the best configuration",
                              description="Train every configuration of an Appendix B grid (each into OUT/GRID/NAME, "
                                          "finished ones skipped) and print the grid's table and the configuration "
                                          "with the highest validation accuracy. Without --weights and --data: the "
                                          "toy world and its small grids.")
    p.add_argument("--grid", required=True, choices=sorted(GRIDS))
    p.add_argument("--objective", default="behavioral", help="the objective whose LoRA is searched (--grid lora)")
    p.add_argument("--finetune", default="lora", choices=["lora", "full"], help="how --grid joint trains (default lora)")
    p.add_argument("--recipe", choices=RECIPES,
                   help="the settings the grid leaves alone (default: authors with --weights/--data, paper on the toy)")
    p.add_argument("--weights", help="OpenAI or Hugging Face CLIP weights (with --data)")
    p.add_argument("--data", help="Concadia folder (with --weights)")
    p.add_argument("--transfer", nargs="*", help="transfer task folders, logged beside the accuracy")
    p.add_argument("--out", default="runs/search", help="run folders go to OUT/GRID/<configuration>")
    p.add_argument("--epochs", type=int, help=f"epochs per run (default {EPOCHS}; toy: one toy epoch)")
    p.add_argument("--max-steps", type=int, help="cap each run's optimizer steps")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (default: train.py's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="autocast (default: the recipe's, as train.py)")
    p.set_defaults(func=search_command)
