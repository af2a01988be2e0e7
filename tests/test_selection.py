"""Appendix C model selection (recovery, transfer score, trade-off, best step), Table 1, Figures 3 and 4."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from clip_min.report import selection, table1, table3
from clip_min.train.runs import RunError
from clip_min.report.figures import PALETTE, figure_training, figure_tradeoff
from clip_min.report.selection import format_table, mean_interval, read_run, table_rows
from clip_min.metrics import preference_accuracy, recovery, trade_off, transfer_score

BASE_F1 = {"food": 0.8, "cifar": 0.5}
# step: (val accuracy, F1 per task). By hand, with base F1 food 0.8 and cifar 0.5:
#   step 10: recovery 0.9, 1.0 -> transfer 0.95 -> trade-off 0.9 * 0.70 + 0.1 * 0.95 = 0.725
#   step 20: recovery 0.8, 0.8 -> transfer 0.80 -> trade-off 0.9 * 0.80 + 0.1 * 0.80 = 0.800  (best at a = 0.9)
#   step 30: recovery 0.5, 0.5 -> transfer 0.50 -> trade-off 0.9 * 0.82 + 0.1 * 0.50 = 0.788
STEPS = {0: (0.50, BASE_F1), 10: (0.70, {"food": 0.72, "cifar": 0.50}), 20: (0.80, {"food": 0.64, "cifar": 0.40}),
         30: (0.82, {"food": 0.40, "cifar": 0.25})}


def write_run(folder, objective="behavioral", finetune="lora", seed=0, steps=STEPS, summary=True):
    """A run folder as train.py leaves it: config.json, metrics.jsonl (step 0 first) and summary.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(dict(objective=objective, finetune=finetune, seed=seed)))
    # The test accuracy is the validation accuracy less 0.05, so the table shows which one it reports.
    lines = [json.dumps(dict(step=step, loss=None if step == 0 else 0.5, val_accuracy=accuracy,
                             test_accuracy=round(accuracy - 0.05, 6), transfer_f1=f1, transfer_score=None))
             for step, (accuracy, f1) in steps.items()]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if summary:
        last = max(steps)
        (folder / "summary.json").write_text(json.dumps(dict(
            objective=objective, finetune=finetune, steps=last, concadia_accuracy_before=0.49,
            concadia_accuracy=steps[last][0], transfer_f1_before=BASE_F1, transfer_f1=steps[last][1])))
    return folder


def shifted(delta: float) -> dict:
    """STEPS with every accuracy after step 0 raised by delta: another seed of the same setting."""
    return {step: (accuracy + (delta if step else 0), f1) for step, (accuracy, f1) in STEPS.items()}


def test_recovery_transfer_score_and_trade_off_by_hand(tmp_path):
    run = read_run(write_run(tmp_path / "run"))
    assert [s.step for s in run.steps] == [10, 20, 30]  # step 0 is the base, not a candidate
    assert recovery({"food": 0.72, "cifar": 0.5}, BASE_F1) == pytest.approx({"food": 0.9, "cifar": 1.0})
    assert [s.transfer_score for s in run.steps] == pytest.approx([0.95, 0.80, 0.50])
    assert [s.trade_off for s in run.steps] == pytest.approx([0.725, 0.800, 0.788])
    assert run.best.step == 20
    assert run.base.accuracy == 0.5 and run.base.transfer_score == pytest.approx(1.0)


def test_transfer_score_is_the_mean_recovery_over_three_tasks():
    """Three tasks, so the mean (0.8) differs from the median (0.9) and from total F1 / total base F1 (0.7)."""
    base = {"food": 0.8, "cifar": 0.5, "imagenet": 0.2, "empty": 0.0}
    f1 = {"food": 0.8, "cifar": 0.25, "imagenet": 0.18, "empty": 0.3}  # recoveries 1.0, 0.5, 0.9; "empty" is left out
    assert transfer_score(f1, base) == pytest.approx((1.0 + 0.5 + 0.9) / 3)
    assert recovery(f1, base) == pytest.approx({"food": 1.0, "cifar": 0.5, "imagenet": 0.9})
    assert transfer_score({"empty": 0.3}, base) is None  # no task the base scores on: no score
    assert trade_off(0.6, 0.8, a=0.9) == pytest.approx(0.9 * 0.6 + 0.1 * 0.8)


def test_preference_accuracy_counts_a_tie_as_no_win():
    """A description that only ties its caption is not preferred: Desc > Cap, strictly."""
    c_des = torch.tensor([2.0, 1.0, 3.0, 0.5, 4.0])
    c_cap = torch.tensor([1.0, 1.0, 3.5, 0.5, 3.0])  # wins, tie, loss, tie, win
    assert preference_accuracy(c_des=c_des, c_cap=c_cap) == pytest.approx(2 / 5)
    assert preference_accuracy(c_des=c_cap, c_cap=c_des) == pytest.approx(1 / 5)  # the arguments are not symmetric


@pytest.mark.parametrize("a, best", [(0.9, 20), (1.0, 30), (0.0, 10)])
def test_best_step_follows_a(tmp_path, a, best):
    assert read_run(write_run(tmp_path / "run"), a=a).best.step == best


def test_the_earliest_of_a_tie_is_the_best_step(tmp_path):
    """Steps 10 and 30 log the same numbers, so their trade-offs tie exactly; docs/09: the earliest wins."""
    steps = {0: STEPS[0], 10: STEPS[20], 20: STEPS[10], 30: STEPS[20]}  # trade-offs 0.800, 0.725, 0.800
    for a in (0.9, 1.0):
        assert read_run(write_run(tmp_path / f"run{a}", steps=steps), a=a).best.step == 10


def test_base_from_the_summary_when_step_0_was_not_logged(tmp_path):
    steps = {step: value for step, value in STEPS.items() if step}
    run = read_run(write_run(tmp_path / "run", steps=steps))
    assert run.base.accuracy == 0.49 and run.base.f1 == BASE_F1  # summary.json's "before" numbers
    assert run.best.step == 20
    with pytest.raises(RunError, match="no base to compare with"):
        read_run(write_run(tmp_path / "bare", steps=steps, summary=False))


def test_damaged_metrics_give_a_one_line_error(tmp_path):
    folder = write_run(tmp_path / "run")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "val_acc\n')
    with pytest.raises(RunError, match=r"metrics.jsonl, line 5: not an evaluation record") as error:
        read_run(folder)
    assert "\n" not in str(error.value)


def test_interval_is_scipy_t_interval():
    values = [0.80, 0.86, 0.91, 0.84]
    mean, half = mean_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (mean - half, mean + half) == pytest.approx((low, high))
    assert mean_interval([0.7]) == (0.7, None)  # one run: no interval


def make_runs(root):
    folders = [write_run(root / "b0", seed=0, steps=shifted(0.0)), write_run(root / "b1", seed=1, steps=shifted(0.02)),
               write_run(root / "i0", objective="iit-das", finetune="full", seed=0, steps=shifted(-0.1))]
    return [read_run(folder) for folder in folders]


def test_table1_holds_the_expected_numbers(tmp_path):
    runs = make_runs(tmp_path)
    behavioral = [str(run.folder) for run in runs if run.setting == ("behavioral", "lora")]
    blv = {"base": {"overall": 0.08, "imaginability": 0.10}, behavioral[0]: {"overall": 0.30, "imaginability": 0.40},
           behavioral[1]: {"overall": 0.40, "imaginability": float("nan")}}  # nan: e.g. too few descriptions scored
    rows = table_rows(runs, blv=blv)
    assert [row.label for row in rows] == ["CLIP (base)", "Behavioral (LoRA)", "IIT-DAS (full)"]
    table = format_table(rows)
    # Base: test accuracy 45.0, F1 80.0 / 50.0, the same in all three runs: a zero-width interval; one BLV value.
    assert "| CLIP (base) | 3 | 45.0 ± 0.0 | 80.0 ± 0.0 | 50.0 ± 0.0 | 0.08 | 0.10 |" in table
    # Behavioral (LoRA): both seeds select step 20 (test accuracy 0.75 and 0.77), F1 64.0 / 40.0.
    half = stats.t.ppf(0.975, 1) * np.std([0.75, 0.77], ddof=1) / math.sqrt(2)
    blv_half = stats.t.ppf(0.975, 1) * np.std([0.30, 0.40], ddof=1) / math.sqrt(2)
    assert (f"| Behavioral (LoRA) | 2 | 76.0 ± {100 * half:.1f} | 64.0 ± 0.0 | 40.0 ± 0.0 | 0.35 ± {blv_half:.2f} "
            f"| 0.40 |") in table
    # IIT-DAS (full), one seed, accuracy lowered by 0.1: trade-offs 0.635, 0.71, 0.698 -> step 20; no interval,
    # and no BLV numbers given: "-".
    assert "| IIT-DAS (full) | 1 | 65.0 | 64.0 | 40.0 | - | - |" in table
    assert "Rows with one run have no interval" in table and "95% t interval" in table
    assert table.splitlines()[0] == "| model | runs | Desc>Cap acc. | food F1 | cifar F1 | BLV overall r | BLV imaginability r |"


def test_figures_are_written(tmp_path):
    runs = make_runs(tmp_path / "runs")
    for draw, name in ((figure_training, "figure3.png"), (figure_tradeoff, "figure4.png")):
        path = draw(runs, tmp_path / "figures" / name)
        assert path.stat().st_size > 1000
        with Image.open(path) as image:
            colours = {colour for _, colour in image.convert("RGB").getcolors(1 << 20)}
        assert PALETTE[("behavioral", "lora")] in colours and PALETTE[("iit-das", "full")] in colours


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    table1.add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_select_command(tmp_path, capsys):
    make_runs(tmp_path / "runs")
    out = tmp_path / "selection"
    assert run_command(["select", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed 1: step 20 of 30" in printed and "| Behavioral (LoRA) | 2 |" in printed
    for name in ("table1.md", "selection.json", "figure3_training.png", "figure4_tradeoff.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "selection.json").read_text())["runs"][0]["step"] == 20
    with pytest.raises(ValueError, match="--a must be in"):
        run_command(["select", "--runs", str(tmp_path / "runs"), "--a", "1.5"])
    with pytest.raises(RunError, match="no train.py run"):
        run_command(["select", "--runs", str(out)])


def test_table_trains_four_settings_per_seed(tmp_path, monkeypatch, capsys):
    """pipeline.run stands in: it writes what a finished run writes, at once."""
    trained = []

    def fake_run(config):
        trained.append(config)
        delta = 0.01 * config.seed - (0.1 if config.objective == "iit-das" else 0.0)
        write_run(tmp_path / config.out, config.objective, config.finetune, config.seed, shifted(delta))
        return {}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(table1.pipeline, "run", fake_run)
    # The fake runs hold no model to attribute; Table 3 is asked for the right runs (tests/test_protocol.py tests it).
    asked = []
    monkeypatch.setattr(table3, "toy_table3", lambda folders, seeds, **_: asked.append((folders, seeds)) or "| table 3 |")
    argv = ["table", "--toy", "--seeds", "2", "--out", "toy_table", "--max-steps", "30"]
    assert run_command(argv) == 0
    assert asked[0][1] == 2 and asked[0][0]["iit-das", "lora", 1] == str(Path("toy_table") / "iit-das-lora" / "seed1")
    assert sorted((c.objective, c.finetune, c.seed) for c in trained) == sorted(
        (o, f, s) for o, f in selection.SETTINGS for s in (0, 1))
    assert all(c.max_steps == 30 and c.weights is None and c.data is None for c in trained)
    printed = capsys.readouterr().out
    for label in ("Behavioral (full)", "Behavioral (LoRA)", "IIT-DAS (full)", "IIT-DAS (LoRA)"):
        assert f"| {label} | 2 | " in printed
    assert (tmp_path / "toy_table" / "figure4_tradeoff.png").is_file()

    assert run_command(argv) == 0  # finished runs with the same options are reused
    assert len(trained) == 8 and "reused" in capsys.readouterr().out
    with pytest.raises(ValueError, match="pass --toy"):
        run_command(["table", "--seeds", "2"])


def test_figure4_is_transfer_score_over_accuracy_with_the_selected_point(tmp_path):
    from clip_min.report.figures import tradeoff_curves

    run = read_run(write_run(tmp_path / "run"))
    # From STEPS above: (validation accuracy, transfer score), the base (recovery 1) first.
    (curve,) = tradeoff_curves([run])
    assert [x for x, _ in curve] == pytest.approx([0.50, 0.70, 0.80, 0.82])
    assert [y for _, y in curve] == pytest.approx([1.0, 0.95, 0.80, 0.50])
    path = figure_tradeoff([run], tmp_path / "figure4.png")
    # The panel is (80, 90)-(680, 530); x (accuracy, %) spans 50..82 and y (transfer, %) 50..100, each padded
    # by 8%. The selected step 20 sits at accuracy 80, transfer 80; the base, where the curve starts, at 50, 100.
    def pixel(accuracy, transfer):
        return (round(80 + (accuracy - (50 - 2.56)) / (32 * 1.16) * 600),
                round(530 - (transfer - (50 - 4.0)) / (50 * 1.16) * 440))

    colour = PALETTE[("behavioral", "lora")]
    with Image.open(path) as image:
        image = image.convert("RGB")
    assert 600 > 0.6 * image.size[0] and 440 > 0.7 * image.size[1]  # the panel fills the canvas beside its legend
    assert image.getpixel(pixel(80, 80)) == colour  # the selected step's dot
    x, y = pixel(50, 100)
    assert image.getpixel((x, y)) == (255, 255, 255) and image.getpixel((x + 5, y)) == colour  # the start's ring
