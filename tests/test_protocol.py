"""The paper's protocol end to end: the selected step's model, the paper's defaults, and their reports.

Runs here train a tiny random CLIP on a tiny toy world for a few steps, so each takes seconds.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tiny import TINY_OPENAI as TINY, as_flags, run_eval as run_cli, scripted_evaluations, tiny_world
from clip_min.model import CLIP
from clip_min.report.selection import read_run
from clip_min.weights import save_clip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "protocol", n_articles=40)


def flags(setup, out: Path, **options) -> list[str]:
    world = setup["world"]
    chosen = dict(weights=setup["base"], data=world / "concadia", objective="behavioral", lora_rank=4, lr=3e-3,
                  device="cpu", amp="off", max_steps=8, eval_every=1, batch_size=6, out=out)
    chosen.update(options)
    listed = as_flags(chosen)
    return listed + ["--transfer", str(world / "transfer" / "color"), str(world / "transfer" / "background")]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def trade_off_by_hand(records: list[dict], a: float = 0.9) -> int:
    """Appendix C written out: the step after 0 with the highest a * val + (1 - a) * mean F1 / base F1."""
    base = records[0]["transfer_f1"]
    best_step, best_value = None, -np.inf
    for r in records[1:]:
        transfer = np.mean([r["transfer_f1"][t] / base[t] for t in base if base[t] > 0])
        value = a * r["val_accuracy"] + (1 - a) * transfer
        if value > best_value:
            best_step, best_value = r["step"], value
    return best_step


@pytest.fixture(scope="module")
def run(setup):
    out = setup["root"] / "run"
    assert train.main(flags(setup, out)) == 0
    return out


def test_the_selected_step_is_appendix_c_and_is_not_the_last(run):
    records = metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    assert all("test_accuracy" in r for r in records)
    assert summary["selected_step"] == trade_off_by_hand(records)
    assert summary["selected_step"] != records[-1]["step"]  # this run peaks early, so the two models differ
    chosen = next(r for r in records if r["step"] == summary["selected_step"])
    assert summary["selected_val_accuracy"] == chosen["val_accuracy"]
    assert summary["selected_test_accuracy"] == chosen["test_accuracy"]
    assert summary["selected_transfer_f1"] == chosen["transfer_f1"]
    assert summary["selected_transfer_score"] == chosen["transfer_score"]
    assert torch.load(run / "selected.pt", weights_only=True)["step"] == summary["selected_step"]


# Validation accuracy by step: step 0, the untouched model, scores highest of all, and steps 2 and 4
# tie for the best after it. Appendix C (docs/09-evaluation.md): step 0 is never a candidate, and the
# earliest of a tie is selected: step 2.
TIED = {0: 0.9, 1: 0.5, 2: 0.75, 3: 0.6, 4: 0.75, 5: 0.7}


def test_training_and_table_1_select_the_earliest_of_a_tie_and_never_step_0(setup, tmp_path, monkeypatch):
    trained = scripted_evaluations(monkeypatch, TIED)
    out = tmp_path / "run"
    assert train.main(flags(setup, out, max_steps=5)) == 0
    assert [(r["step"], r["val_accuracy"]) for r in metrics(out)] == list(TIED.items())
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["selected_step"], summary["selected_val_accuracy"]) == (2, 0.75)
    assert summary["selected_transfer_score"] is None  # no transfer F1: accuracy alone decides
    chosen = torch.load(out / "selected.pt", weights_only=True)
    assert chosen["step"] == 2
    assert chosen["trainable"].keys() == trained[2].keys()
    for name, tensor in trained[2].items():  # the tensors of step 2, not of step 4 that ties it
        assert torch.equal(chosen["trainable"][name], tensor), name
    assert not all(torch.equal(trained[2][name], trained[4][name]) for name in trained[2])
    assert read_run(out).best.step == 2  # Table 1 reads the same step off metrics.jsonl


def test_evaluation_with_lora_dropout_runs_in_eval_mode_and_training_goes_on_in_train_mode(setup, tmp_path,
                                                                                             monkeypatch):
    """Dropout 0.5 on the adapters: an evaluation in train mode would drop half of each branch's inputs."""
    from clip_min.train import loop

    modes, real_accuracy, real_step_loss = [], loop.split_accuracy, loop.step_loss

    def split_accuracy(model, split, device, autocast):
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and {m.p for m in dropouts} == {0.5}
        modes.append(("evaluating", {m.training for m in model.modules()}))
        return real_accuracy(model, split, device, autocast)

    def step_loss(model, *args, **kwargs):
        modes.append(("training", {m.training for m in model.modules()}))
        return real_step_loss(model, *args, **kwargs)

    monkeypatch.setattr(loop, "split_accuracy", split_accuracy)
    monkeypatch.setattr(loop, "step_loss", step_loss)
    # The run's schedule (the paper's): evaluations after steps 0, 2 and 4 of the run, whatever the epochs.
    assert train.main(flags(setup, tmp_path / "run", lora_dropout=0.5, max_steps=4, eval_every=2,
                            eval_schedule="run")) == 0
    # Evaluations (validation, then test) at steps 0, 2 and 4; steps 1 to 4 train between them.
    assert [kind for kind, _ in modes] == ["evaluating"] * 2 + ["training"] * 2 + ["evaluating"] * 2 + \
        ["training"] * 2 + ["evaluating"] * 2
    for kind, seen in modes:
        assert seen == {kind == "training"}, kind  # every module in that mode


def test_eval_run_measures_the_selected_step_and_step_last_the_last(run, capsys):
    records = metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    chosen = next(r for r in records if r["step"] == summary["selected_step"])
    for step, split, expected in (("selected", "val", chosen["val_accuracy"]),
                                  ("selected", "test", chosen["test_accuracy"]),
                                  ("last", "val", records[-1]["val_accuracy"]),
                                  ("last", "test", records[-1]["test_accuracy"])):
        code, out, err = run_cli(["concadia", "--run", run, "--split", split, "--step", step, "--device", "cpu",
                                  "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["accuracy"] == pytest.approx(expected, abs=1e-12), (step, split)
    assert chosen["test_accuracy"] != records[-1]["test_accuracy"]  # else the comparisons above prove nothing


def test_the_paper_defaults_read_back_from_a_real_data_run(setup, tmp_path, capsys):
    world = setup["world"]
    # Text layers 128 wide, so that the paper's IIT-DAS rank of 128 fits them.
    torch.manual_seed(0)
    save_clip(CLIP(replace(TINY, text_width=128, text_heads=2)), tmp_path / "wide.pt")
    common = ["--weights", tmp_path / "wide.pt", "--data", world / "concadia", "--device", "cpu", "--amp", "off",
              "--max-steps", "1", "--eval-every", "1", "--batch-size", "6", "--recipe", "paper"]
    for objective, lr, rank in (("behavioral", 5e-7, 64), ("iit-das", 1e-5, 128), ("joint", 1e-5, 128)):
        out = tmp_path / objective
        site = ["--layer", "0", "--intervention-size", "32"] if objective != "behavioral" else []  # a 2-block tower
        assert train.main([str(a) for a in common + site + ["--objective", objective, "--out", out]]) == 0
        printed = capsys.readouterr().out
        assert printed.count("falls back to validation accuracy alone") == 1  # no --transfer: said once
        config = json.loads((out / "config.json").read_text())
        assert (config["lr"], config["l2"], config["lora_rank"], config["lora_dropout"]) == (lr, 0.0, rank, 0.0)
        assert config["trade_off_a"] == 0.9 and config["epochs"] == 10
        iit = objective != "behavioral"
        assert config["rotation_lr"] == (lr if iit else None)
        assert config["iit_samples"] == (100_000 if iit else None)


def test_rotation_lr_and_iit_samples_shape_the_run(setup, tmp_path, capsys):
    out = tmp_path / "iit"
    argv = flags(setup, out, objective="iit-das", layer=0, intervention_size=32, lr=1e-3, rotation_lr=0.25,
                 iit_samples=12, epochs=2, max_steps=100, eval_every=2, recipe="paper")
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4  # 2 epochs of 12 triplets, 6 a batch
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [1e-3, 0.25]
    assert set(torch.load(out / "selected.pt", weights_only=True)["rotation"]) == set(state["rotation"])
    code = train.main(flags(setup, tmp_path / "b", iit_samples=12))
    assert code == 2 and "--iit-samples applies to --objective iit-das and joint only" in capsys.readouterr().err


def test_table3_samples_the_same_texts_each_with_a_word_rated_in_both_norms(setup):
    from clip_min.data.norms import read_glasgow_norms
    from clip_min.data.concadia import read_concadia
    from clip_min.report.table3 import sample_texts

    world = setup["world"]
    glasgow = world / "norms" / "glasgow_norms.csv"
    norms = {"imageability": read_glasgow_norms(glasgow, "IMAG"), "concreteness": read_glasgow_norms(glasgow, "CNC")}
    # Keep the norms to a third of the words, so that some texts have no word rated in both.
    kept = sorted(norms["imageability"])[::3]
    norms = {name: {w: r[w] for w in kept if w in r} for name, r in norms.items()}
    examples, _ = read_concadia(world / "concadia", "train")
    first, again = sample_texts(examples, norms, n=20, seed=3), sample_texts(examples, norms, n=20, seed=3)
    assert [(k, e.filename) for k, e in first] == [(k, e.filename) for k, e in again]
    assert [k for k, _ in first] == ["description"] * 20 + ["caption"] * 20
    assert sample_texts(examples, norms, n=20, seed=4) != first  # the seed draws them
    for kind, example in first:
        words = [w.lower().strip(".,;:") for w in getattr(example, kind).split()]
        assert any(w in norms["imageability"] and w in norms["concreteness"] for w in words), (kind, example)
    eligible = [e for e in examples if any(w.lower().strip(".,;:") in kept for w in e.description.split())]
    assert len(eligible) < len(examples)  # the condition left some out


def test_the_behavioral_search_trains_each_configuration_once_and_chooses_the_best(setup, tmp_path, capsys):
    world = setup["world"]
    argv = ["search", "--grid", "behavioral", "--weights", setup["base"], "--data", world / "concadia",
            "--max-steps", "1", "--eval-every", "1", "--device", "cpu", "--amp", "off", "--out", tmp_path]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    folders = sorted((tmp_path / "behavioral").iterdir())
    assert len(folders) == 32  # Appendix B: 8 learning rates x L2 in {0, 0.1, 0.01, 0.001}
    best = {f: max(r["val_accuracy"] for r in metrics(f) if r["step"] > 0) for f in folders}
    top = max(best.values())
    chosen = next(line for line in out.splitlines() if "(chosen)" in line)
    assert chosen.split("|")[-2].strip() in {str(f) for f, value in best.items() if value == top}
    assert f"(validation accuracy {100 * top:.1f}%)" in out
    config = json.loads((folders[0] / "config.json").read_text())
    assert (config["objective"], config["finetune"]) == ("behavioral", "full")
    # Run again: every configuration is found finished and none trains.
    stamps = {f: (f / "metrics.jsonl").stat().st_mtime_ns for f in folders}
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert out.count("finished earlier with the same request; skipped") == 32
    assert stamps == {f: (f / "metrics.jsonl").stat().st_mtime_ns for f in folders}
