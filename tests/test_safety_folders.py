"""Run folders that cannot be clobbered, and outputs that cannot overwrite inputs (issue 19).

Each test builds its unlucky case (a rerun without --resume, a folder of someone else's files,
an --out inside the data, ...) and checks the one-line refusal, or that the run went on, and in
both cases that nothing of the earlier run was lost. Runs are train.py on a tiny random CLIP
and a tiny toy world, as in tests/test_safety.py.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import eval as eval_script
import train
from tiny import tiny_world, run_flags, one_line_error
from clip_min.train import checkpoint
from clip_min.train.runlock import own_run_folder

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "folders", n_articles=12)


flags = run_flags  # a two-step behavioral LoRA run on the tiny world (tests/tiny.py)


@pytest.fixture(scope="module")
def finished(setup):
    """A finished two-step run; tests copy it before touching it."""
    out = setup["root"] / "finished"
    assert train.main(flags(setup, out)) == 0
    return out


def contents(folder: Path) -> dict[str, str]:
    """name -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- --out must be absent, empty, or a run folder --------------------------------------------


def test_rerunning_into_a_run_folder_without_resume_is_refused_and_nothing_is_lost(setup, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").unlink()  # as a run that crashed: a checkpoint, no summary yet
    before = contents(run)
    assert train.main(flags(setup, run)) == 2
    line = one_line_error(capsys, "train.py")
    assert "holds an unfinished run" in line and "checkpoint.pt" in line
    assert f"--resume {run}" in line and "--overwrite" in line
    assert contents(run) == before


def test_a_folder_of_other_files_is_refused_even_with_overwrite_and_left_as_it_is(setup, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not ours")
    (folder / "metrics.jsonl").write_text("also not ours\n")  # a run's file name, but no config.json
    for extra in ([], ["--overwrite"]):
        assert train.main(flags(setup, folder) + extra) == 2
        assert "is not empty and not a run folder" in one_line_error(capsys, "train.py")
        assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg", "metrics.jsonl"]  # not even a .lock


def test_overwrite_keeps_every_earlier_file_until_its_replacement_is_written(setup, finished, tmp_path, monkeypatch,
                                                                           capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "weights.pt").write_bytes(b"an earlier full fine-tuning run's weights")  # this run will not write it
    (run / "notes.txt").write_text("mine")
    before = contents(run)
    real_save = checkpoint.save

    # Killed at its first checkpoint, before writing it: every earlier file is still whole.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", interrupted)
    assert train.main(flags(setup, run) + ["--overwrite"]) == 130
    capsys.readouterr()
    now = contents(run)
    # (config.json, metrics.jsonl and selected.pt are this run's by now: each was replaced, none deleted.)
    for name in ("checkpoint.pt", "adapters.pt", "weights.pt", "summary.json", "notes.txt"):
        assert now[name] == before[name], name

    # Run to its end: the checkpoint is replaced by the new one, never absent on the way.
    seen = []

    def checked(folder, *args, **kwargs):
        seen.append(hashlib.sha256((Path(folder) / "checkpoint.pt").read_bytes()).hexdigest())
        real_save(folder, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", checked)
    assert train.main(flags(setup, run, lora_rank=8) + ["--overwrite"]) == 0
    assert seen[0] == before["checkpoint.pt"]
    after = contents(run)
    assert not (run / "weights.pt").exists()  # the earlier run's, which this one does not write: gone at the end
    assert (run / "notes.txt").read_text() == "mine"  # not a run's file: never touched
    assert after["checkpoint.pt"] != before["checkpoint.pt"] and after["summary.json"] != before["summary.json"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["run"]["config"]["lora_rank"] == 8


def test_the_default_folder_keeps_the_earlier_run_beside_it(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.main(flags(setup, None)) == 0
    first = contents(tmp_path / "runs" / "latest")
    capsys.readouterr()
    assert train.main(flags(setup, None, seed=1)) == 0
    out = capsys.readouterr().out
    (kept,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("latest-")]
    assert f"the earlier run in runs/latest (the default --out) is kept as {Path('runs') / kept.name}" in out
    assert contents(kept) == first  # the first run, whole
    latest = tmp_path / "runs" / "latest"
    assert (latest / "summary.json").is_file() and contents(latest)["checkpoint.pt"] != first["checkpoint.pt"]
    # eval.py --run runs/latest, as docs/safety.md says, reads the newest run.
    assert eval_script.main(["concadia", "--run", "runs/latest", "--device", "cpu", "--json"]) == 0


def test_leftover_cleanup_removes_only_its_own_temp_names_of_dead_writers(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        live_temp = out / f".checkpoint.pt.tmp{sleeper.pid}"  # a run still writing
        dead_temp = out / f".checkpoint.pt.tmp{dead.pid}"  # a run killed mid-write
        users = [out / f".notes.txt.tmp{dead.pid}", out / ".vimrc.tmp1", out / "data.tmp2"]  # the user's own
        for path in [live_temp, dead_temp, *users]:
            path.write_bytes(b"x")
        with own_run_folder(out):
            pass
        assert live_temp.exists() and not dead_temp.exists()
        assert all(path.exists() for path in users)
    finally:
        sleeper.kill()
        sleeper.wait()


# ---- no output may be, or lie inside, one of the command's inputs -----------------------------


def test_train_out_inside_or_onto_an_input_is_refused_before_anything_is_written(setup, tmp_path, capsys):
    data = setup["world"] / "concadia"
    before = contents(setup["world"])
    link = tmp_path / "link"
    link.symlink_to(data)
    for out, relation in ((data / "runs", "lies inside"), (data, "is"), (link, "is"), (setup["world"], "holds"),
                          (setup["base"], "is")):
        assert train.main(flags(setup, out)) == 2, out
        line = one_line_error(capsys, "train.py")
        assert f"--out {out} {relation}" in line, line
    assert contents(setup["world"]) == before


def test_eval_outputs_onto_their_inputs_are_refused(setup, finished, tmp_path, capsys):
    base = tmp_path / "base.pt"
    shutil.copy(setup["base"], base)
    base_bytes = base.read_bytes()
    run_before = contents(finished)
    cases = [
        ["export", "--weights", base, "--format", "openai", "--out", base],  # over its own input
        ["export", "--run", finished, "--format", "openai", "--out", setup["base"]],  # over the run's base
        ["export", "--run", finished, "--format", "hf", "--out", finished],  # into the run folder
        ["export", "--run", finished, "--format", "hf", "--out", finished / "hf"],
    ]
    for argv in cases:
        assert eval_script.main([str(a) for a in argv]) == 2, argv
        assert "writing there would overwrite what the command reads" in one_line_error(capsys, "eval.py")
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    image_bytes = image.read_bytes()
    assert eval_script.main(["attribute", "--weights", str(base), "--image", str(image), "--text", "red",
                             "--device", "cpu", "--html", str(image)]) == 2
    assert "--html" in one_line_error(capsys, "eval.py")
    assert eval_script.main(["select", "--runs", str(finished), "--out", str(finished / "selection")]) == 2
    assert "lies inside --runs" in one_line_error(capsys, "eval.py")
    assert base.read_bytes() == base_bytes and image.read_bytes() == image_bytes
    assert contents(finished) == run_before and not (finished / "hf").exists()
