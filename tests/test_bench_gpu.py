"""bench/gpu.py, the prepared GPU check, run the way a CPU can: --device cpu --small.

The GPU run happens rarely and has one try; this keeps every section of it running, and checks
that what it writes is complete and that each ratio, projection and target is computed from the
measured numbers beside it.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def numbers(value):
    """Every int and float inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    done = subprocess.run([sys.executable, "bench/gpu.py", "--device", "cpu", "--small", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.txt").read_text(), done.stdout


def test_every_section_ran_and_every_number_is_finite(run):
    result, _, _ = run
    assert result["errors"] == {} and result["skipped"] == []
    for key in ("meta", "sizes", "train_step", "ratios", "encode", "amp", "evaluation", "projection", "toy", "targets"):
        assert result[key], key
    assert all(math.isfinite(x) for x in numbers(result))


def test_every_row_is_measured(run):
    result, text, stdout = run
    bench = load_bench()
    names = [v.name for v in bench.STEP_ROWS] + list(bench.HF_ROWS)
    assert sorted(result["train_step"]) == sorted(names)
    for name in names:
        row = result["train_step"][name]
        assert 0 < row["ms_min"] <= row["ms"]
        assert row["peak_mb"] is None  # GPU memory only; there is none on the CPU
        assert name in text
    assert len(result["encode"]) == 10  # 2 towers x (fp16: ours, OpenAI, OpenAI fp16 weights; bf16: ours, OpenAI)
    assert all(row["per_second"] > 0 for row in result["encode"].values())
    assert text.strip() in stdout  # what is printed is what is written
    assert result["toy"]["2 steps"]["steps"] == 2


def test_ratios_and_projections_come_from_the_measured_numbers(run):
    result, _, _ = run
    ms = {name: row["ms"] for name, row in result["train_step"].items()}
    ratios = result["ratios"]
    assert ratios["hf_bf16_over_ours_bf16"] == pytest.approx(ms["HF + peft bf16"] / ms["ours bf16, as train.py"], rel=1e-12)
    assert ratios["iit_over_behavioral_bf16"] == pytest.approx(ms["IIT-DAS bf16, as train.py"] / ms["ours bf16, as train.py"], rel=1e-12)
    best = ratios["best_behavioral_bf16"]
    bf16 = [n for n, row in result["train_step"].items() if row.get("objective") == "behavioral" and row["amp"] == "bf16"]
    assert ms[best] == min(ms[n] for n in bf16)
    encode = result["encode"]
    assert ratios["encode_text_fp16_ours_over_OpenAI"] == pytest.approx(
        encode["text fp16 ours"]["per_second"] / encode["text fp16 OpenAI"]["per_second"], rel=1e-12)

    # The paper's run: ceil(77,534 / 12) = 6,462 steps an epoch, 10 epochs, evaluations every 500 steps.
    per_image = result["evaluation"]["seconds"] / result["evaluation"]["images"]
    for objective, row in (("behavioral", "ours bf16, as train.py"), ("iit-das", "IIT-DAS bf16, as train.py")):
        p = result["projection"][objective]
        assert p["steps"] == 64_620 and p["evaluations"] == 1 + 129 + 1 + 2
        minutes = (64_620 * ms[row] / 1000 + p["evaluations"] * per_image * 9_693) / 60
        assert p["total_min"] == pytest.approx(minutes, rel=1e-9)

    targets = {t["name"]: t for t in result["targets"]}
    assert len(targets) == 8
    assert targets["ours vs HF + peft, behavioral step, bf16 (x faster)"]["measured"] == ratios["hf_bf16_over_ours_bf16"]
    assert targets["projected 10-epoch IIT-DAS run (min)"]["measured"] == result["projection"]["iit-das"]["total_min"]
    for t in targets.values():
        op, bound = t["target"].split()
        assert t["met"] == (t["measured"] >= float(bound) if op == ">=" else t["measured"] <= float(bound))


def test_mixed_precision_is_compared_on_the_same_steps(run):
    result, _, _ = run
    amp, steps, tail = result["amp"], result["sizes"]["curve_steps"], result["sizes"]["curve_tail"]
    for dtype in ("bf16", "fp16"):
        feature = amp["feature"][dtype]
        assert 0.99 < feature["text_cosine_min"] <= 1 + 1e-6 and 0.99 < feature["image_cosine_min"] <= 1 + 1e-6
        assert feature["loss_difference"] == pytest.approx(abs(feature["loss"] - feature["loss_fp32"]))
    curves = amp["curves"]
    assert all(len(curves[a]["loss"]) == steps for a in ("off", "bf16", "fp16"))
    # Same initial weights and first batch: the first losses agree to mixed precision's rounding.
    assert curves["bf16"]["loss"][0] == pytest.approx(curves["off"]["loss"][0], rel=0.02)
    fp32_end = sum(curves["off"]["loss"][-tail:]) / tail
    bf16_end = sum(curves["bf16"]["loss"][-tail:]) / tail
    assert amp["curve_end"]["bf16"]["relative_to_fp32"] == pytest.approx(abs(bf16_end - fp32_end) / fp32_end)
