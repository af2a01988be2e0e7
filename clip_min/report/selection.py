"""Model selection (Appendix C) and Table 1, from the run folders train.py writes.

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
the BLV correlations when given the ratings (``--ratings``): of the selected model under the
paper's recipe, of the last under the authors' (``clip_min.train.runs.RECIPE_STEP``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from ..files import UnreadableFile, read_json, read_text_whole
from ..metrics import recovery, transfer_score
from ..train.runs import RunError, read_run_config
from ..train.config import TrainConfig
from ..train.selected import beats, selection_score

# The paper's four settings, in Table 1's order; other objectives follow them.
SETTINGS = (("behavioral", "full"), ("behavioral", "lora"), ("iit-das", "full"), ("iit-das", "lora"))
OBJECTIVE_NAMES = {"behavioral": "Behavioral", "iit-das": "IIT-DAS", "joint": "Joint", "clip": "Contrastive"}
FINETUNE_NAMES = {"full": "full", "lora": "LoRA"}
# metrics.jsonl has a line of about 200 bytes per evaluation: a million evaluations fit in 256 MiB.
MAX_METRICS_BYTES = 256 << 20
# summary.json is about 1 kB.
MAX_SUMMARY_BYTES = 1 << 20


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
        """Appendix C: the step with the highest trade-off, by the rule training selects with (``beats``)."""
        best = None
        for candidate in self.steps:  # in step order, as the run evaluated them
            if beats(candidate.step, candidate.trade_off, None if best is None else best.trade_off):
                best = candidate
        return best


def score_step(step: int, accuracy: float, f1: dict[str, float], base_f1: dict[str, float], a: float,
               test_accuracy: float | None = None) -> StepScore:
    """Recovery, transfer score and trade-off of one evaluation."""
    return StepScore(step, accuracy, test_accuracy, dict(f1), recovery(f1, base_f1), transfer_score(f1, base_f1),
                     selection_score(accuracy, f1, base_f1, a))


def read_metrics(folder: Path) -> list[dict]:
    """metrics.jsonl as a list of records sorted by step."""
    path = folder / "metrics.jsonl"
    if not os.path.lexists(path):
        raise RunError(f"{folder}: metrics.jsonl is missing; is it a train.py run folder?")
    try:
        text = read_text_whole(path, MAX_METRICS_BYTES, "metrics.jsonl")
    except UnreadableFile as err:
        raise RunError(str(err)) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            test = record.get("test_accuracy")
            records.append(dict(step=int(record["step"]), val_accuracy=float(record["val_accuracy"]),
                                test_accuracy=None if test is None else float(test),
                                transfer_f1={k: float(v) for k, v in (record.get("transfer_f1") or {}).items()}))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise RunError(f"{path}, line {number}: not an evaluation record (step, val_accuracy, transfer_f1); "
                           f"the file is damaged") from None
    return sorted(records, key=lambda r: r["step"])


def read_run(folder: str | Path, a: float = TrainConfig.trade_off_a) -> RunLog:
    """Read a run folder and score every evaluation it logged."""
    folder = Path(folder)
    config = read_run_config(folder)
    records = read_metrics(folder)
    summary_path = folder / "summary.json"
    try:
        summary = read_json(summary_path, MAX_SUMMARY_BYTES, "run summary", "the run folder is damaged") \
            if os.path.lexists(summary_path) else {}
    except UnreadableFile as err:
        raise RunError(str(err)) from None
    if not isinstance(summary, dict):
        raise RunError(f"{summary_path} holds a JSON {type(summary).__name__}, not the object train.py writes; "
                       "the run folder is damaged")
    if records and records[0]["step"] == 0:
        first = records.pop(0)
        base_accuracy, base_f1, base_test = first["val_accuracy"], first["transfer_f1"], first["test_accuracy"]
    elif "transfer_f1_before" in summary:
        # No step-0 evaluation: the summary's numbers, whose accuracy is on the test split.
        try:
            base_accuracy = float(summary["concadia_accuracy_before"])
            base_f1 = {k: float(v) for k, v in summary["transfer_f1_before"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise RunError(f"{summary_path}: concadia_accuracy_before or transfer_f1_before is not the number and "
                           "the table of numbers train.py writes; the run folder is damaged") from None
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


def setting_order(setting: tuple[str, str]) -> tuple:
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
    settings = sorted({run.setting for run in runs}, key=setting_order)
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
             "F1 (percent): zero-shot macro-F1 at that step; BLV r: Pearson r of the model's score with "
             "blind and low-vision raters' mean rating per description (the selected model under the paper's "
             "recipe, the last under the authors'). -: not computed (e.g. no ratings given)."]
    if any(row.n > 1 for row in rows):
        notes.append(f"± is the half-width of a {100 * level:.0f}% t interval over runs (n - 1 degrees of freedom).")
    if any(row.n == 1 for row in rows):
        notes.append("Rows with one run have no interval: an interval needs two or more runs (seeds).")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)
