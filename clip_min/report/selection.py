"""Model selection (Appendix C), Table 1, and Figures 3 and 4, from the run folders train.py writes.

A run logs an evaluation every few steps (metrics.jsonl): the Concadia validation preference
accuracy and the zero-shot macro-F1 of each transfer task. Appendix C picks one step per run:

    recovery_task   = F1_task / F1_task(base CLIP)
    transfer score  = mean over tasks of recovery_task
    trade-off       = a * accuracy + (1 - a) * transfer score,   a = 0.9

and the step with the highest trade-off is the run's model. The base is the run's step-0
evaluation (the model before any update; summary.json's numbers if step 0 was not logged), and
it is not itself a candidate. Runs with the same objective and fine-tuning are seeds of one
setting; Table 1 gives each setting's mean over seeds with a 95% t interval.

Training does the same as it goes and keeps the selected step's tensors (``clip_min.train.selected``),
so what is read here agrees with the model ``eval.py --run`` loads. Selection reads the validation
accuracy; Table 1 reports the *test* accuracy logged at the selected step, as the paper does, and
the BLV correlations of the selected model when given the ratings (``--ratings``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import stats

from ..train import pipeline
from ..metrics import transfer_score
from ..train.runs import LoadedRun, RunError, load_run, read_run_config
from ..train.selected import selection_score
from ..train.config import TrainConfig
from ..train.device import mixed_precision, resolve_device
from ..weights import load_clip

# The paper's four settings, in Table 1's order; other objectives follow them.
SETTINGS = (("behavioral", "full"), ("behavioral", "lora"), ("iit-das", "full"), ("iit-das", "lora"))
OBJECTIVE_NAMES = {"behavioral": "Behavioral", "iit-das": "IIT-DAS", "joint": "Joint", "clip": "Contrastive"}
FINETUNE_NAMES = {"full": "full", "lora": "LoRA"}
PALETTE = {
    ("behavioral", "full"): (31, 119, 180),
    ("behavioral", "lora"): (255, 127, 14),
    ("iit-das", "full"): (44, 160, 44),
    ("iit-das", "lora"): (214, 39, 40),
    ("joint", "full"): (148, 103, 189),
    ("joint", "lora"): (140, 86, 75),
}
OTHER_COLOURS = ((227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
BASE_COLOUR = (0, 0, 0)


@dataclass
class StepScore:
    """One logged evaluation, scored for Appendix C."""

    step: int
    accuracy: float  # Concadia validation preference accuracy, in [0, 1]
    test_accuracy: float | None  # Concadia test preference accuracy (None in runs that did not log it)
    f1: dict[str, float]  # macro-F1 per transfer task
    recovery: dict[str, float]  # F1 / base F1 per task
    transfer_score: float | None  # mean recovery; None without transfer tasks
    trade_off: float  # a * accuracy + (1 - a) * transfer score (accuracy alone without transfer tasks)


@dataclass
class RunLog:
    """A run's evaluations, scored."""

    folder: Path
    objective: str
    finetune: str
    seed: int | None
    base: StepScore  # the model before training
    steps: list[StepScore]  # the evaluations after training began, by step

    @property
    def setting(self) -> tuple[str, str]:
        return self.objective, self.finetune

    @property
    def best(self) -> StepScore:
        """Appendix C: the step with the highest trade-off (the earliest of a tie)."""
        return max(self.steps, key=lambda s: (s.trade_off, -s.step))


def recovery(f1: dict[str, float], base_f1: dict[str, float]) -> dict[str, float]:
    """Appendix C: model F1 / base CLIP F1, per task (tasks the base scores 0 on are left out)."""
    return {task: value / base_f1[task] for task, value in f1.items() if base_f1.get(task)}


def score_step(step: int, accuracy: float, f1: dict[str, float], base_f1: dict[str, float], a: float,
               test_accuracy: float | None = None) -> StepScore:
    """Recovery, transfer score and trade-off of one evaluation."""
    return StepScore(step, accuracy, test_accuracy, dict(f1), recovery(f1, base_f1), transfer_score(f1, base_f1),
                     selection_score(accuracy, f1, base_f1, a))


def read_metrics(folder: Path) -> list[dict]:
    """metrics.jsonl as a list of records sorted by step."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise RunError(f"{folder}: metrics.jsonl is missing; is it a train.py run folder?")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            test = record.get("test_accuracy")
            records.append(dict(step=int(record["step"]), val_accuracy=float(record["val_accuracy"]),
                                test_accuracy=None if test is None else float(test),
                                transfer_f1={k: float(v) for k, v in (record.get("transfer_f1") or {}).items()}))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RunError(f"{path}, line {number}: not an evaluation record (step, val_accuracy, transfer_f1); "
                           f"the file is damaged") from None
    return sorted(records, key=lambda r: r["step"])


def read_run(folder: str | Path, a: float = 0.9) -> RunLog:
    """Read a run folder and score every evaluation it logged."""
    folder = Path(folder)
    config = read_run_config(folder)
    records = read_metrics(folder)
    summary_path = folder / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except json.JSONDecodeError as err:
        raise RunError(f"{summary_path} is not valid JSON ({err.msg}); the run folder is damaged") from None
    if records and records[0]["step"] == 0:
        first = records.pop(0)
        base_accuracy, base_f1, base_test = first["val_accuracy"], first["transfer_f1"], first["test_accuracy"]
    elif "transfer_f1_before" in summary:
        # No step-0 evaluation: the summary's numbers, whose accuracy is on the test split.
        base_accuracy, base_f1 = float(summary["concadia_accuracy_before"]), summary["transfer_f1_before"]
        base_test = base_accuracy
    else:
        raise RunError(f"{folder}: no step-0 evaluation in metrics.jsonl and no summary.json, so no base to compare with")
    if not records:
        raise RunError(f"{folder}: no evaluation after step 0 in metrics.jsonl; has the run started training?")
    return RunLog(
        folder,
        str(config.get("objective")),
        str(config.get("finetune")),
        config.get("seed"),
        score_step(0, base_accuracy, base_f1, base_f1, a, base_test),
        [score_step(r["step"], r["val_accuracy"], r["transfer_f1"], base_f1, a, r["test_accuracy"]) for r in records],
    )


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders: each path that holds a metrics.jsonl, or the folders below it that do."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunError(f"run folder not found: {path}")
        below = sorted(p.parent for p in path.rglob("metrics.jsonl"))
        if not below:
            raise RunError(f"{path}: no train.py run in it or below it (no metrics.jsonl)")
        found += [p for p in below if p not in found]
    return found


# ---- Table 1 ----------------------------------------------------------------------------------


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of its t interval (n - 1 degrees of freedom); None for a single value."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    sem = values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(stats.t.ppf((1 + level) / 2, len(values) - 1) * sem)


@dataclass
class Row:
    """One line of Table 1: a setting's mean (and interval half-width) over its runs."""

    label: str
    setting: tuple[str, str] | None  # None for the base model
    n: int  # runs
    accuracy: tuple[float, float | None] | None  # Concadia test accuracy at the selected step
    f1: dict[str, tuple[float, float | None]]
    transfer_score: tuple[float, float | None] | None
    blv: dict[str, tuple[float, float | None] | None]  # BLV Pearson r of the dimensions in BLV_COLUMNS


def setting_label(setting: tuple[str, str]) -> str:
    objective, finetune = setting
    return f"{OBJECTIVE_NAMES.get(objective, objective)} ({FINETUNE_NAMES.get(finetune, finetune)})"


def _setting_order(setting: tuple[str, str]) -> tuple:
    return (SETTINGS.index(setting), "") if setting in SETTINGS else (len(SETTINGS), setting)


def _row(label: str, setting, scores: list[StepScore], level: float, blv: list[dict]) -> Row:
    tasks = list(dict.fromkeys(task for s in scores for task in s.f1))
    transfers = [s.transfer_score for s in scores if s.transfer_score is not None]
    tests = [s.test_accuracy for s in scores if s.test_accuracy is not None]

    def over_runs(values: list) -> tuple[float, float | None] | None:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return mean_interval(values, level) if values else None

    return Row(
        label, setting, len(scores),
        over_runs(tests),
        {task: mean_interval([s.f1[task] for s in scores if task in s.f1], level) for task in tasks},
        mean_interval(transfers, level) if transfers else None,
        {dim: over_runs([b.get(dim) for b in blv]) for dim in BLV_COLUMNS},
    )


# Table 1's BLV columns: the Pearson r of the model's score with BLV raters' overall and imaginability ratings.
BLV_COLUMNS = ("overall", "imaginability")


def format_interval(value: tuple[float, float | None] | None, percent: bool = True) -> str:
    """A table cell: "mean ± half-width" (in percent, or as it is), the mean alone for one run, "-" for none."""
    if value is None:
        return "-"
    scale, digits = (100, 1) if percent else (1, 2)
    mean, half = value
    return f"{scale * mean:.{digits}f}" if half is None else f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}"


def table_rows(runs: list[RunLog], level: float = 0.95, blv: dict[str, dict] | None = None) -> list[Row]:
    """Table 1: the base model, then each setting at its runs' selected steps.

    ``blv`` maps a run's folder (and "base") to its BLV correlations {dimension: r}; without it
    the BLV cells are "-".
    """
    blv = blv or {}
    rows = [_row("CLIP (base)", None, [run.base for run in runs], level, [blv.get("base", {})])]
    settings = sorted({run.setting for run in runs}, key=_setting_order)
    for setting in settings:
        chosen = [run for run in runs if run.setting == setting]
        rows.append(_row(setting_label(setting), setting, [run.best for run in chosen], level,
                         [blv.get(str(run.folder), {}) for run in chosen]))
    return rows


def format_table(rows: list[Row], level: float = 0.95) -> str:
    """Table 1's layout in markdown: accuracy, macro-F1 per task, transfer score; percent, mean ± half-width."""
    tasks = list(dict.fromkeys(task for row in rows for task in row.f1))

    header = (["model", "runs", "Desc>Cap acc."] + [f"{task} F1" for task in tasks]
              + [f"BLV {dim} r" for dim in BLV_COLUMNS])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = ([row.label, str(row.n), format_interval(row.accuracy)]
                 + [format_interval(row.f1.get(task)) for task in tasks]
                 + [format_interval(row.blv.get(dim), percent=False) for dim in BLV_COLUMNS])
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["Desc>Cap acc. (percent): Concadia test accuracy at each run's selected step (selected on validation); "
             "F1 (percent): zero-shot macro-F1 at that step; BLV r: Pearson r of the selected model's score with "
             "blind and low-vision raters' mean rating per description. -: not computed (e.g. no ratings given)."]
    if any(row.n > 1 for row in rows):
        notes.append(f"± is the half-width of a {100 * level:.0f}% t interval over runs (n - 1 degrees of freedom).")
    if any(row.n == 1 for row in rows):
        notes.append("Rows with one run have no interval: an interval needs two or more runs (seeds).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


# ---- figures (PIL only) ---------------------------------------------------------------------


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _limits(values: list[float], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        spread = max(abs(high) * 0.05, 0.01)
        return low - spread, high + spread
    margin = (high - low) * pad
    return low - margin, high + margin


class Panel:
    """A plot area on an image: data coordinates to pixels, a frame with ticks, lines and dots."""

    def __init__(self, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xlim, ylim,
                 title: str, xlabel: str, ylabel: str):
        self.draw, self.box, self.xlim, self.ylim = draw, box, xlim, ylim
        left, top, right, bottom = box
        font, small = _font(14), _font(12)
        for x in nice_ticks(*xlim):
            px, _ = self.xy(x, ylim[0])
            draw.line([(px, bottom), (px, bottom + 4)], fill=(0, 0, 0))
            draw.line([(px, top + 1), (px, bottom - 1)], fill=(235, 235, 235))
            draw.text((px, bottom + 6), f"{x:g}", fill=(0, 0, 0), font=small, anchor="mt")
        for y in nice_ticks(*ylim):
            _, py = self.xy(xlim[0], y)
            draw.line([(left - 4, py), (left, py)], fill=(0, 0, 0))
            draw.line([(left + 1, py), (right - 1, py)], fill=(235, 235, 235))
            draw.text((left - 6, py), f"{y:g}", fill=(0, 0, 0), font=small, anchor="rm")
        draw.rectangle(box, outline=(0, 0, 0))  # after the grid lines, so they stay inside
        draw.text(((left + right) / 2, top - 26), title, fill=(0, 0, 0), font=font, anchor="mb")
        draw.text((left, top - 8), ylabel, fill=(60, 60, 60), font=small, anchor="lb")
        draw.text(((left + right) / 2, bottom + 24), xlabel, fill=(60, 60, 60), font=small, anchor="mt")

    def xy(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    def line(self, xs: list[float], ys: list[float], colour, width: int = 2) -> None:
        points = [self.xy(x, y) for x, y in zip(xs, ys)]
        if len(points) > 1:
            self.draw.line(points, fill=colour, width=width, joint="curve")

    def dot(self, x: float, y: float, colour, radius: int = 5) -> None:
        px, py = self.xy(x, y)
        self.draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour, outline=(255, 255, 255))


def _legend(draw: ImageDraw.ImageDraw, x: int, y: int, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
    font = _font(13)
    for i, (label, colour) in enumerate(entries):
        top = y + 22 * i
        draw.rectangle([x, top, x + 14, top + 14], fill=colour)
        draw.text((x + 22, top + 7), label, fill=(0, 0, 0), font=font, anchor="lm")


def setting_colours(runs: list[RunLog]) -> dict[tuple[str, str], tuple[int, int, int]]:
    settings = sorted({run.setting for run in runs}, key=_setting_order)
    others = iter(OTHER_COLOURS * len(settings))
    return {s: PALETTE.get(s) or next(others) for s in settings}


def _over_training(runs: list[RunLog], path: str | Path, panels: list[tuple[str, str, object]], title: str) -> Path:
    """One panel per (title, y label, value of a StepScore), a line per run over the steps, its selected step dotted."""
    colours = setting_colours(runs)
    columns = min(len(panels), 3)
    grid_rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (70 + 470 * columns + 230, 40 + 440 * grid_rows), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 10), title, fill=(0, 0, 0), font=_font(15))
    steps = [0] + [s.step for run in runs for s in run.steps]
    xlim = (0, max(steps) * 1.02 or 1)
    for index, (panel_title, ylabel, value) in enumerate(panels):
        series = [[(s.step, value(s)) for s in [run.base] + run.steps if value(s) is not None] for run in runs]
        ys = [100 * y for points in series for _, y in points] or [0.0, 100.0]
        left, top = 70 + (index % columns) * 470, 100 + (index // columns) * 440
        panel = Panel(draw, (left, top, left + 400, top + 300), xlim, _limits(ys), panel_title, "training step", ylabel)
        for run, points in zip(runs, series):
            panel.line([x for x, _ in points], [100 * y for _, y in points], colours[run.setting])
            best = run.best
            if value(best) is not None:
                panel.dot(best.step, 100 * value(best), colours[run.setting], radius=5)
    legend_x = 70 + 470 * columns
    _legend(draw, legend_x, 100, [(setting_label(s), c) for s, c in colours.items()])
    draw.text((legend_x, 100 + 22 * len(colours) + 10), "a line per run (seed)\ndot: its selected step",
              fill=(60, 60, 60), font=_font(12))
    return _save(image, path)


def figure_training(runs: list[RunLog], path: str | Path) -> Path:
    """Figure 3: Concadia validation accuracy and each transfer task's macro-F1 over training, a line per run."""
    tasks = list(dict.fromkeys(task for run in runs for s in run.steps for task in s.f1))
    panels = [("Concadia Desc>Cap (validation)", "accuracy (%)", lambda s: s.accuracy)]
    panels += [(task, "macro-F1 (%)", lambda s, task=task: s.f1.get(task)) for task in tasks]
    return _over_training(runs, path, panels, "Figure 3: accuracy over training")


def figure_tradeoff(runs: list[RunLog], path: str | Path) -> Path:
    """Figure 4: each run's Appendix C trade-off over the steps, with its selected (highest) point."""
    panels = [("a * accuracy + (1 - a) * transfer score", "trade-off (x 100)", lambda s: s.trade_off)]
    return _over_training(runs, path, panels, "Figure 4: the trade-off that selects each run's step")


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


# ---- commands ---------------------------------------------------------------------------------


def blv_columns(runs: list[RunLog], ratings: str, images: str | None, device: str, amp: str,
                step: str = "selected") -> dict[str, dict]:
    """Table 1's BLV columns: {run folder or "base": {dimension: Pearson r}} of each run's selected model."""
    from .evaluate import Session, blv_cells, ratings_folders, read_ratings, vision_id  # evaluate is eval.py's

    folder, images = ratings_folders(ratings, images)
    rated = read_ratings(folder)
    device = resolve_device(device)
    autocast, _ = mixed_precision(amp, device)

    def correlations(loaded: LoadedRun) -> dict:
        cells = blv_cells(Session(loaded, device, autocast, vision_id(loaded)), rated, images)[0]
        return {dim: cells[dim]["BLV"]["pearson"] for dim in BLV_COLUMNS if "BLV" in cells[dim]}

    found = {str(run.folder): correlations(load_run(run.folder, device, step)) for run in runs}
    bases = {read_run_config(run.folder).get("weights") for run in runs}
    if len(bases) == 1 and None not in bases:
        base = bases.pop()
        found["base"] = correlations(LoadedRun(load_clip(base, device), None, {"weights": base}, Path(base)))
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
        (out / "table1.md").write_text(table + "\n")
        selection = [dict(folder=str(run.folder), objective=run.objective, finetune=run.finetune, seed=run.seed,
                          step=run.best.step, accuracy=run.best.accuracy, test_accuracy=run.best.test_accuracy,
                          transfer_f1=run.best.f1, transfer_score=run.best.transfer_score,
                          trade_off=run.best.trade_off, blv=(blv or {}).get(str(run.folder))) for run in runs]
        (out / "selection.json").write_text(json.dumps(dict(a=a, runs=selection), indent=2) + "\n")
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
    options = dict(max_steps=args.max_steps, epochs=args.epochs, eval_every=args.eval_every,
                   device=args.device, amp=args.amp)
    configs = toy_configs(args.seeds, args.out, **options)
    for config in configs:
        folder = Path(config.out)
        # "selected": runs from before training kept the selected step are trained again.
        request = json.dumps({**options, "seed": config.seed, "selected": True}, sort_keys=True)
        stamp = folder / "table_request.json"
        if (folder / "summary.json").is_file() and stamp.is_file() and stamp.read_text() == request:
            print(f"{folder}: finished earlier with the same options; reused (delete it to train again)")
            continue
        print(f"\n=== {setting_label((config.objective, config.finetune))}, seed {config.seed} -> {folder}")
        pipeline.run(config)
        stamp.write_text(request)
    runs = [read_run(config.out, args.a) for config in configs]
    report(runs, args.a, args.out)
    from .table3 import toy_table3  # table3 draws on this module

    folders = {(c.objective, c.finetune, c.seed): c.out for c in configs}
    table = toy_table3(folders, args.seeds)
    print(f"\nTable 3 (toy norms; the base and behavioral runs mediated through the same seed's IIT-DAS site)\n\n{table}")
    if args.out is not None:
        (Path(args.out) / "table3.md").write_text(table + "\n")
    return 0


def add_commands(subparsers) -> None:
    """Add ``select`` and ``table`` to eval.py's subcommands."""
    p = subparsers.add_parser("select", help="Appendix C model selection over runs; Table 1, Figures 3 and 4",
                              description="For each run pick the step with the best a * accuracy + (1 - a) * "
                                          "transfer score; print Table 1 (mean and 95% t interval over the runs of "
                                          "each setting) and draw Figures 3 and 4.")
    p.add_argument("--runs", nargs="+", required=True, help="run folders, or folders holding run folders")
    p.add_argument("--a", type=float, default=0.9, help="weight of accuracy in the trade-off (default 0.9)")
    p.add_argument("--out", default="runs/selection", help="where to write table1.md, selection.json and the figures")
    p.add_argument("--ratings", help="Kreiss et al.'s repository (or its behavioral_data/): fill the BLV columns")
    p.add_argument("--blv-images", help="the rated images, if not where `eval.py blv` finds them")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (for the BLV columns)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.set_defaults(func=select_command)

    p = subparsers.add_parser("table", help="train the paper's four settings on the toy world and print Table 1",
                              description="Behavioral and IIT-DAS, each with full fine-tuning and LoRA, for --seeds "
                                          "seeds on the toy world; then `select` over them. Finished runs with the "
                                          "same options are reused.")
    p.add_argument("--toy", action="store_true", help="train on the toy world (the only world `table` trains on)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per setting (default 3; the paper: 5)")
    p.add_argument("--out", default="runs/table", help="run folders go to OUT/<objective>-<finetune>/seed<N>")
    p.add_argument("--a", type=float, default=0.9, help="weight of accuracy in the trade-off (default 0.9)")
    p.add_argument("--max-steps", type=int, help="cap each run's optimizer steps")
    p.add_argument("--epochs", type=int, help="passes over the toy training split (default: the toy default)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps (default: the toy default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.set_defaults(func=table_command)
