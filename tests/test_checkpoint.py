"""Training that survives: exact resume after a kill, damaged checkpoints, NaN, several processes.

Every run here is train.py on a tiny random CLIP and a tiny toy world (35 training images), so
that each takes seconds on a CPU; the killed run and the two-process run are subprocesses.
"""

import json
import math
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train
from tiny import TINY_OPENAI as TINY, tiny_world, run_flags, scripted_evaluations, JOINT_AT_BLOCK_0
from clip_min.report.selection import read_run
from clip_min.train import checkpoint, loop
from clip_min.rotation import Rotation
from clip_min.train.config import TrainConfig
from clip_min.train.loop import stop_if_not_finite

REPO = Path(__file__).resolve().parents[1]
K = 32  # intervention size: half the text width


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "checkpoint", n_articles=12)


def flags(setup, out: Path, **options) -> list[str]:
    """train.py's flags for a joint (Eq. 5) LoRA run on the tiny world; options override them."""
    return run_flags(setup, out, **{**JOINT_AT_BLOCK_0, **options})


@pytest.fixture(scope="module")
def finished(setup):
    """A finished two-step run with its checkpoint; tests copy it before changing anything."""
    out = setup["root"] / "finished"
    assert train.main(flags(setup, out)) == 0
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_metrics(a: list[dict], b: list[dict], atol: float) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if x[key] is None:
                assert y[key] is None, key
            else:
                assert x[key] == pytest.approx(y[key], abs=atol), key


def adapters(run: Path) -> dict:
    return torch.load(run / "adapters.pt", weights_only=True)


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# train.py in a process that SIGKILLs itself right after the evaluation of step sys.argv[1], as a
# crash would: the fault comes from outside the library, by replacing the loop's evaluate.
KILLED_AFTER_EVALUATING = """
import os, signal, sys
import train
from clip_min.train import loop
step_to_die, evaluate = int(sys.argv[1]), loop.evaluate
def evaluate_then_die(run, step):
    evaluate(run, step)
    if step == step_to_die:
        os.kill(os.getpid(), signal.SIGKILL)
loop.evaluate = evaluate_then_die
sys.exit(train.main(sys.argv[2:]))
"""


def nan_loss_at(monkeypatch, bad_step: int) -> None:
    """Make the loss of the bad_step-th step NaN, as a diverging run would, by wrapping the loop's step_loss."""
    calls, step_loss = [0], loop.step_loss

    def poisoned(*args, **kwargs):
        calls[0] += 1
        loss = step_loss(*args, **kwargs)
        return loss * math.nan if calls[0] == bad_step else loss

    monkeypatch.setattr(loop, "step_loss", poisoned)


def test_a_killed_run_resumes_to_the_adapters_and_metrics_of_a_run_never_stopped(setup, tmp_path):
    # Killed at the end of step 3: the checkpoint is step 2's, but step 3's evaluation is already
    # in metrics.jsonl. LoRA dropout makes the result depend on the random generators too.
    options = dict(max_steps=5, eval_every=3, checkpoint_every=2, lora_dropout=0.1)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train.main(flags(setup, whole, **options)) == 0
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_EVALUATING, "3", *flags(setup, killed, **options)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["step"] for r in metrics(killed)] == [0, 3]
    assert not (killed / "summary.json").exists()

    assert train.main(flags(setup, killed, **options, resume=killed)) == 0
    assert_same_metrics(metrics(killed), metrics(whole), atol=1e-6)  # step 3 logged once
    a, b = adapters(whole), adapters(killed)
    for part in ("lora", "rotation"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            torch.testing.assert_close(b[part][name], a[part][name], rtol=0, atol=1e-6)
    summary = json.loads((killed / "summary.json").read_text())
    assert (summary["steps"], summary["resumes"]) == (5, 1)
    # The selection survives too: the same step, and the same tensors in selected.pt.
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert summary["selected_step"] == whole_summary["selected_step"] is not None
    a, b = (torch.load(run / "selected.pt", weights_only=True) for run in (whole, killed))
    assert a["step"] == b["step"] and a["trainable"].keys() == b["trainable"].keys()
    for name in a["trainable"]:
        torch.testing.assert_close(b["trainable"][name], a["trainable"][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "flipped bit"])
def test_a_damaged_checkpoint_is_refused_and_nothing_is_overwritten(setup, finished, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    path = run / checkpoint.NAME
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        # One bit inside a stored tensor: torch.load reads the file without complaint.
        state = torch.load(path, weights_only=True)
        tensor = next(t for t in state["trainable"].values() if t.abs().sum() > 0)
        at = raw.find(tensor.numpy().tobytes())
        assert at > 0
        raw[at + 5] ^= 0x10
    path.write_bytes(raw)
    if damage == "flipped bit":
        torch.load(path, weights_only=True)
    before = files(run)
    assert train.main(flags(setup, run, resume=run)) == 2
    error = last_error_line(capsys)
    assert error.startswith(f"train.py: error: {path} is ") and "damaged" in error and "nothing was changed" in error
    assert files(run) == before


# The seed draws the adapters' start, the data order and dropout's masks: another seed is another run.
@pytest.mark.parametrize("change, named", [(dict(lora_rank=8), "--lora-rank was 4, now 8"),
                                           (dict(seed=1), "--seed was 0, now 1")], ids=["lora-rank", "seed"])
def test_a_resume_with_another_config_is_refused_naming_the_field(setup, finished, tmp_path, capsys, change, named):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = files(run)
    assert train.main(flags(setup, run, **change, resume=run)) == 2
    error = last_error_line(capsys)
    assert "the run was started with another configuration (" in error and named in error
    assert "may change only --out, --resume, --epochs, --max-steps" in error
    assert files(run) == before


def test_a_resume_may_train_longer(setup, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    assert train.main(flags(setup, run, max_steps=3, resume=run)) == 0
    assert [r["step"] for r in metrics(run)] == [0, 2, 3]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["resumes"]) == (3, 1)


def test_a_resume_that_changes_eval_every_selects_among_the_evaluations_it_logged(setup, tmp_path, monkeypatch):
    """--eval-every may change on resume (docs/long-runs-and-gpus.md); the selection goes on from the checkpoint's.

    Ctrl-C after step 3's evaluation: the checkpoint is step 2's, and selected.pt already holds step 3,
    the best so far. The resume goes on from step 2 evaluating every 2 steps, so step 3 is never
    logged again: Appendix C over what metrics.jsonl holds (steps 1, 2, 4, 6; step 0 is never a
    candidate) selects step 2, and selected.pt must hold step 2's tensors again, not step 3's.
    """
    accuracy = {0: 0.9, 1: 0.5, 2: 0.6, 3: 0.8, 4: 0.55, 6: 0.58}
    trained = scripted_evaluations(monkeypatch, accuracy, crash_after={3})
    out = tmp_path / "run"
    assert train.main(flags(setup, out, max_steps=6, eval_every=1, checkpoint_every=2)) == 130
    assert torch.load(out / "selected.pt", weights_only=True)["step"] == 3
    step_2 = trained[2]
    assert train.main(flags(setup, out, max_steps=6, eval_every=2, checkpoint_every=2, resume=out)) == 0
    assert [(r["step"], r["val_accuracy"]) for r in metrics(out)] == [(s, accuracy[s]) for s in (0, 1, 2, 4, 6)]
    assert json.loads((out / "summary.json").read_text())["selected_step"] == 2
    chosen = torch.load(out / "selected.pt", weights_only=True)
    assert chosen["step"] == 2 and chosen["trainable"].keys() == step_2.keys()
    for name, tensor in step_2.items():
        assert torch.equal(chosen["trainable"][name], tensor), name
    assert read_run(out).best.step == 2  # and Table 1 reads the same


def test_a_nan_loss_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(setup, tmp_path, capsys, monkeypatch):
    nan_loss_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert train.main(flags(setup, out, max_steps=4, checkpoint_every=2)) == 2
    assert last_error_line(capsys) == (f"train.py: error: step 3: the joint loss (Eq. 5) is nan; stopped; the checkpoint "
                                       f"of step 2 in {out} is intact; try a lower --lr or --amp off")
    state = torch.load(out / checkpoint.NAME, weights_only=True)
    assert state.pop("sha256") == checkpoint.digest(state)
    assert state["progress"]["step"] == 2
    assert not (out / "summary.json").exists()


def test_fp16_counts_a_skipped_step_and_goes_on(setup, tmp_path, monkeypatch):
    nan_loss_at(monkeypatch, 2)
    out = tmp_path / "run"
    assert train.main(flags(setup, out, max_steps=3, amp="fp16")) == 0
    assert [(r["step"], r["skipped_steps"]) for r in metrics(out)] == [(0, 0), (2, 1), (3, 1)]
    assert all(r["loss"] is None or np.isfinite(r["loss"]) for r in metrics(out))
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1


def test_fp16_counts_a_step_whose_gradient_overflowed_though_its_loss_is_finite():
    """fp16 overflows in the backward pass, where the loss is still finite: only the scaler can tell."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    run = SimpleNamespace(scaler=torch.amp.GradScaler("cpu"), optimizer=optimizer)
    x = torch.randn(3, 4)
    for step, overflow in ((1, True), (2, False)):
        optimizer.zero_grad()
        loss = layer(x).square().mean()
        run.scaler.scale(loss).backward()
        if overflow:
            layer.weight.grad[0, 0] = math.inf
        before = [p.detach().clone() for p in layer.parameters()]
        assert loop.optimizer_step(run, step, loss.item()) is overflow
        assert all(torch.equal(p, b) for p, b in zip(layer.parameters(), before)) is overflow  # skipped: untouched
    assert run.scaler.get_scale() == 2.0**16 * 0.5  # GradScaler's init_scale 2 ** 16, halved once (backoff_factor)


def test_a_non_finite_gradient_is_named():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    a.grad, b.grad = torch.ones(2), torch.tensor([1.0, float("inf")])
    config = TrainConfig(objective="iit-das", out="runs/x")
    with pytest.raises(FloatingPointError, match=r"^step 7: the gradient of the IIT loss \(Eqs. 2-3\) is not finite "
                                                 r"in b\.weight; stopped; the checkpoint of step 6 in runs/x is intact"):
        stop_if_not_finite(7, 0.5, [a, b], {a: "a.weight", b: "b.weight"}, config, 6)


def projection(state: dict) -> torch.Tensor:
    """R_{:, :k} R_{:, :k}^T, all of the rotation that the intervention (Eq. 4) uses."""
    rotation = Rotation(TINY.text_width)
    rotation.load_state_dict(state)
    R = rotation.R.detach()
    return R[:, :K] @ R[:, :K].T


def test_two_processes_under_torchrun_take_the_steps_of_one(setup, tmp_path):
    # 35 training images in global batches of 12: the processes take 6 + 6, 6 + 6, then 6 + 5.
    # At the paper's LoRA rate: Adam's first steps are about lr * sign(gradient), so at large rates
    # gradient entries near zero turn rounding differences into visible ones.
    options = dict(max_steps=3, eval_every=3, batch_size=12, lr=1e-4)
    one, two = tmp_path / "one", tmp_path / "two"
    assert train.main(flags(setup, one, **options)) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *flags(setup, two, **options)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = adapters(one), adapters(two)
    for name in a["lora"]:
        torch.testing.assert_close(b["lora"][name], a["lora"][name], rtol=0, atol=1e-5)
    # R itself may differ where the loss cannot see it (see clip_min/train/distributed.py).
    torch.testing.assert_close(projection(b["rotation"]), projection(a["rotation"]), rtol=0, atol=1e-5)
    assert_same_metrics(metrics(two), metrics(one), atol=1e-5)  # written once, by process 0
    assert json.loads((two / "summary.json").read_text())["processes"] == 2


def test_batch_order_resumes_mid_epoch_with_the_same_batches():
    generator = torch.Generator().manual_seed(0)
    expected = [rows for _ in range(3) for rows in torch.randperm(10, generator=generator).split(4)]  # 3 epochs
    order = checkpoint.BatchOrder(10, 4, seed=0)
    got = [order.next() for _ in range(4)]  # into the second epoch
    resumed = checkpoint.BatchOrder(10, 4, seed=123)
    resumed.load_state_dict(order.state_dict())
    got += [resumed.next() for _ in range(5)]
    assert len(got) == len(expected) and all(torch.equal(g, e) for g, e in zip(got, expected))


def test_random_generators_come_back_from_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1), np.random.standard_normal()  # both cache a second normal draw
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    draws = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.gauss(0, 1), np.random.standard_normal(), torch.rand(3))
    assert again[:2] == draws[:2] and torch.equal(again[2], draws[2])
