"""``eval.py select`` and ``eval.py table``: Appendix C over run folders, Table 1 and Figures 3 and 4.

    select   pick each run's step (clip_min/report/selection.py), print Table 1 (with the BLV
             columns when given the ratings), write it with Figures 3 and 4 (clip_min/report/figures.py)
    table    train the paper's four settings for several seeds on the toy world, then the same,
             and Table 3 (clip_min/report/table3.py)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write_text, check_output
from ..data.ratings import ratings_folders, read_ratings
from ..train import pipeline
from ..train.config import RECIPES, TrainConfig, recipe_setting
from ..train.device import resolve_device
from ..train.runs import RECIPE_STEP, LoadedRun, load_model, load_run, read_run_config, run_recipe
from . import table3
from .blv import BLV_RECIPES, blv_cells
from .figures import figure_training, figure_tradeoff
from .selection import BLV_COLUMNS, SETTINGS, RunLog, find_runs, format_table, read_run, setting_label, table_rows
from .session import Session, measured_in, vision_id


def blv_columns(runs: list[RunLog], ratings: str, images: str | None, device: str, amp: str | None) -> dict[str, dict]:
    """Table 1's BLV columns: {run folder or "base": {dimension: Pearson r}}, each run measured as its
    recipe says (RECIPE_STEP's model, BLV_RECIPES' descriptions, its precision unless ``amp`` is
    given); the base as the first run's recipe."""
    folder, images = ratings_folders(ratings, images)
    recipes = {run.folder: run_recipe(run.folder) for run in runs}
    rated = {recipe: read_ratings(folder, **BLV_RECIPES[recipe]) for recipe in set(recipes.values())}
    device = resolve_device(device)

    def correlations(loaded: LoadedRun, recipe: str, config: dict) -> dict:
        session = Session(loaded, device, measured_in(amp, config, device), vision_id(loaded))
        cells = blv_cells(session, rated[recipe], images)[0]
        return {dim: cells[dim]["BLV"]["pearson"] for dim in BLV_COLUMNS if "BLV" in cells[dim]}

    found = {}
    for run in runs:
        loaded = load_run(run.folder, device, RECIPE_STEP[recipes[run.folder]])
        found[str(run.folder)] = correlations(loaded, recipes[run.folder], loaded.config)
    bases = {read_run_config(run.folder).get("weights") for run in runs}
    if len(bases) == 1 and None not in bases:
        base = bases.pop()
        found["base"] = correlations(load_model(base, None, device), recipes[runs[0].folder],
                                     read_run_config(runs[0].folder))
    return found


def report(runs: list[RunLog], a: float, out: str | Path | None, blv: dict[str, dict] | None = None) -> str:
    """Print each run's selected step and Table 1; write the table and Figures 3 and 4 into ``out``."""
    for run in runs:
        best = run.best
        transfer = "-" if best.transfer_score is None else f"{100 * best.transfer_score:.1f}%"
        print(f"{run.folder}: {setting_label(run.setting)}, seed {run.seed}: step {best.step} of "
              f"{run.steps[-1].step}, validation accuracy {100 * best.accuracy:.1f}%, transfer score {transfer}, "
              f"trade-off {best.trade_off:.4f}")
    table = format_table(table_rows(runs, blv=blv))
    print(f"\nTable 1 (model selection: a = {a} in a * accuracy + (1 - a) * transfer score)\n\n{table}")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "table1.md", table + "\n")
        selection = [dict(folder=str(run.folder), objective=run.objective, finetune=run.finetune, seed=run.seed,
                          step=run.best.step, accuracy=run.best.accuracy, test_accuracy=run.best.test_accuracy,
                          transfer_f1=run.best.f1, transfer_score=run.best.transfer_score,
                          trade_off=run.best.trade_off, blv=(blv or {}).get(str(run.folder))) for run in runs]
        atomic_write_text(out / "selection.json", json.dumps(dict(a=a, runs=selection), indent=2) + "\n")
        written = [out / "table1.md", out / "selection.json",
                   figure_training(runs, out / "figure3_training.png"), figure_tradeoff(runs, out / "figure4_tradeoff.png")]
        print("\nwrote " + ", ".join(str(p) for p in written))
    return table


def _check_a(a: float) -> None:
    if not 0 <= a <= 1:
        raise ValueError(f"--a must be in [0, 1] (Appendix C uses 0.9), got {a}")


def select_command(args) -> int:
    """``select``: Appendix C on existing runs."""
    _check_a(args.a)
    if args.out is not None:
        check_output(args.out, "--out", [("--runs", folder) for folder in args.runs], holds=False)
    runs = [read_run(folder, args.a) for folder in find_runs(args.runs)]
    blv = blv_columns(runs, args.ratings, args.blv_images, args.device, args.amp) if args.ratings else None
    report(runs, args.a, args.out, blv)
    return 0


def toy_configs(seeds: int, out: str | Path, **options) -> list[TrainConfig]:
    """The paper's four settings for each seed on the toy world, each in out/<objective>-<finetune>/seed<N>."""
    return [TrainConfig(objective=objective, finetune=finetune, seed=seed,
                        out=str(Path(out) / f"{objective}-{finetune}" / f"seed{seed}"), **options)
            for seed in range(seeds) for objective, finetune in SETTINGS]


def table_command(args) -> int:
    """``table --toy``: train the four settings for each seed, then select and tabulate."""
    if not args.toy:
        raise ValueError("table trains the paper's four settings on the toy world: pass --toy; for runs you trained "
                         "yourself, use `select --runs FOLDER ...`")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    _check_a(args.a)
    # --amp left unset is the recipe's, written out so that the request stamps say how the runs computed.
    amp = args.amp or recipe_setting(TrainConfig(recipe=args.recipe), "amp")
    options = dict(max_steps=args.max_steps, epochs=args.epochs, eval_every=args.eval_every,
                   device=args.device, amp=amp, recipe=args.recipe)
    configs = toy_configs(args.seeds, args.out, **options)
    for config in configs:
        # "selected": runs from before training kept the selected step are trained again.
        # Without --recipe the request reads as before there were recipes, so those runs are reused.
        request = json.dumps({**pipeline.given(options), "seed": config.seed, "selected": True,
                              **pipeline.mark_full(config.finetune)}, sort_keys=True)
        if pipeline.finished(config, request, "table_request.json"):
            print(f"{config.out}: finished earlier with the same options; reused (delete it to train again)")
            continue
        print(f"\n=== {setting_label((config.objective, config.finetune))}, seed {config.seed} -> {config.out}")
        pipeline.run_stamped(config, request, "table_request.json")
    runs = [read_run(config.out, args.a) for config in configs]
    report(runs, args.a, args.out)
    folders = {(c.objective, c.finetune, c.seed): c.out for c in configs}
    recipe = args.recipe or "paper"
    table = table3.toy_table3(folders, args.seeds, recipe=recipe)
    unrotated = "the identity window" if table3.RECIPE_OPTIONS[recipe]["unrotated"] == "identity" else \
        "the same seed's IIT-DAS site"
    print(f"\nTable 3 (toy norms; the base and behavioral runs mediated through {unrotated})\n\n{table}")
    if args.out is not None:
        atomic_write_text(Path(args.out) / "table3.md", table + "\n")
    return 0


def add_commands(subparsers) -> None:
    """Add ``select`` and ``table`` to eval.py's subcommands."""
    p = subparsers.add_parser("select", help="Appendix C model selection over runs; Table 1, Figures 3 and 4",
                              description="For each run pick the step with the best a * accuracy + (1 - a) * "
                                          "transfer score; print Table 1 (mean and 95% t interval over the runs of "
                                          "each setting) and draw Figures 3 and 4.")
    p.add_argument("--runs", nargs="+", required=True, help="run folders, or folders holding run folders")
    p.add_argument("--a", type=float, default=TrainConfig.trade_off_a,
                   help=f"weight of accuracy in the trade-off (default {TrainConfig.trade_off_a})")
    p.add_argument("--out", default="runs/selection", help="where to write table1.md, selection.json and the figures")
    p.add_argument("--ratings", help="Kreiss et al.'s repository (or its behavioral_data/): fill the BLV columns")
    p.add_argument("--blv-images", help="the rated images, if not where `eval.py blv` finds them")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (for the BLV columns)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast of the BLV columns (default: each run's, as it trained)")
    p.set_defaults(func=select_command)

    p = subparsers.add_parser("table", help="train the paper's four settings on the toy world and print Table 1",
                              description="Behavioral and IIT-DAS, each with full fine-tuning and LoRA, for --seeds "
                                          "seeds on the toy world; then `select` over them. Finished runs with the "
                                          "same options are reused.")
    p.add_argument("--toy", action="store_true", help="train on the toy world (the only world `table` trains on)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per setting (default 3; the paper: 5)")
    p.add_argument("--out", default="runs/table", help="run folders go to OUT/<objective>-<finetune>/seed<N>")
    p.add_argument("--a", type=float, default=TrainConfig.trade_off_a,
                   help=f"weight of accuracy in the trade-off (default {TrainConfig.trade_off_a})")
    p.add_argument("--max-steps", type=int, help="cap each run's optimizer steps")
    p.add_argument("--recipe", choices=RECIPES, help="the runs' and Table 3's settings (default on the toy: paper)")
    p.add_argument("--epochs", type=int, help="passes over the toy training split (default: the toy default)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (default: the toy default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="autocast (default: the recipe's, as train.py)")
    p.set_defaults(func=table_command)
