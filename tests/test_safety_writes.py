"""A run never deletes its own files, and writes never follow links (issue 28).

Each test builds its unlucky case (a file system that hands a freed inode number to the next
file, a lock or a temporary name that is a link out of the folder, ...) and checks that the
run's files are whole and loadable, or the one-line refusal and that nothing outside was
written. Runs are train.py on a tiny random CLIP and a tiny toy world, as in
tests/test_safety_folders.py.
"""

import json
import os
import resource
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

import eval as eval_script
import train
from tiny import tiny_world, run_flags, one_line_error
from clip_min.train import checkpoint
from clip_min.train.runs import load_run, read_adapters, read_selected

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "writes", n_articles=12)


flags = run_flags  # a two-step behavioral LoRA run on the tiny world (tests/tiny.py)


# ---- 1. a run's own files are known by name and its record, never by inode number -------------


class ReusedInode:
    """An os.stat result whose inode number is the file name's: every file of one name gets the same one."""

    def __init__(self, result: os.stat_result, path):
        self._result = result
        self.st_ino = zlib.crc32(os.fsencode(os.path.basename(os.fspath(path))))

    def __getattr__(self, name):
        return getattr(self._result, name)


def test_overwrite_runs_in_a_row_keep_every_file_of_the_last_on_a_file_system_that_reuses_inodes(
        setup, tmp_path, monkeypatch, capsys):
    # A file system hands the number of a file just freed to the next one created; here the worst
    # case, every time: the checkpoint a run writes has the number its predecessor's had.
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *args, **kwargs: ReusedInode(real_stat(path, *args, **kwargs), path)
                        if not isinstance(path, int) else real_stat(path, *args, **kwargs))
    out = tmp_path / "run"
    runs = [dict(seed=0), dict(seed=1), dict(seed=2, finetune="full", lr=1e-4), dict(seed=3), dict(seed=4, lora_rank=8)]
    for i, options in enumerate(runs):
        assert train.main(flags(setup, out, **options) + (["--overwrite"] if i else [])) == 0, capsys.readouterr().err
    monkeypatch.undo()

    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["adapters.pt", "checkpoint.pt", "config.json", "metrics.jsonl", "selected.pt", "summary.json"]
    # (weights.pt, the full fine-tuning run's, went when the last run finished: this run does not write it)
    config = json.loads((out / "config.json").read_text())
    assert (config["seed"], config["lora_rank"], config["finetune"]) == (4, 8, "lora")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state.pop("sha256") == checkpoint.digest(state) and state["run"]["config"]["seed"] == 4
    assert state["progress"]["step"] == 2 and json.loads((out / "summary.json").read_text())["steps"] == 2
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 2]
    assert read_selected(out / "selected.pt", "cpu")["step"] == 2
    ranks = {t.shape[0] for name, t in read_adapters(out / "adapters.pt", "cpu")["lora"].items() if name.endswith("lora_A")}
    assert ranks == {8}
    for step in ("selected", "last"):
        assert load_run(out, step=step).config["seed"] == 4


# ---- 2. writes never follow a link -------------------------------------------------------------


def test_a_lock_that_is_a_link_out_of_the_folder_is_refused_and_what_it_leads_to_is_unchanged(setup, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    missing = tmp_path / "not_yet.txt"
    for name, make in {"symbolic": lambda lock: lock.symlink_to(outside), "hard": lambda lock: os.link(outside, lock),
                       "dangling": lambda lock: lock.symlink_to(missing)}.items():
        out = tmp_path / f"run_{name}"
        out.mkdir()
        make(out / ".lock")
        assert train.main(flags(setup, out)) == 2, name
        line = one_line_error(capsys, "train.py")
        assert f"{out / '.lock'} is a " in line and "never writes through a link" in line, line
        assert outside.read_text() == "precious" and not missing.exists(), name
        assert sorted(p.name for p in out.iterdir()) == [".lock"], name  # nothing was written


def test_a_temporary_name_that_is_a_link_is_refused_and_what_it_leads_to_is_unchanged(setup, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    for name, make in {"symbolic": lambda tmp: tmp.symlink_to(outside), "hard": lambda tmp: os.link(outside, tmp)}.items():
        out = tmp_path / f"run_{name}"
        out.mkdir()
        tmp = out / f".config.json.tmp{os.getpid()}"  # the name this process writes config.json through
        make(tmp)
        assert train.main(flags(setup, out)) == 2, name
        line = one_line_error(capsys, "train.py")
        assert f"{tmp} is a " in line and "never writes through a link" in line, line
        assert outside.read_text() == "precious" and not (out / "config.json").exists(), name
        tmp.unlink()  # as the line says: the same command now runs
        assert train.main(flags(setup, out)) == 0, name

    # An output path: eval.py export's temporary name beside --out.
    exported = tmp_path / "exported.pt"
    (tmp_path / f".exported.pt.tmp{os.getpid()}").symlink_to(outside)
    export = ["export", "--weights", str(setup["base"]), "--format", "openai", "--out", str(exported)]
    assert eval_script.main(export) == 2
    assert "never writes through a link" in one_line_error(capsys, "eval.py")
    assert outside.read_text() == "precious" and not exported.exists()

    # A plain file under this process's temporary name was left by an earlier process with the
    # same pid, killed mid-write (in a container every run can be pid 1): it is replaced.
    (tmp_path / f".exported.pt.tmp{os.getpid()}").unlink()
    (tmp_path / f".exported.pt.tmp{os.getpid()}").write_bytes(b"half of an earlier export")
    assert eval_script.main(export) == 0
    assert torch.load(exported, weights_only=True).keys() == torch.load(setup["base"], weights_only=True).keys()
    assert not (tmp_path / f".exported.pt.tmp{os.getpid()}").exists()


# ---- 6. an OS error while writing names the file and the step; an --out that loops -----------


def test_a_file_too_large_names_the_file_and_the_step(setup, tmp_path):
    out = tmp_path / "run"
    limit = 64_000  # config.json, metrics.jsonl, selected.pt (22 kB) fit; checkpoint.pt (110 kB) does not
    done = subprocess.run([sys.executable, "train.py", *map(str, flags(setup, out))], cwd=REPO, capture_output=True,
                          text=True, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"train.py: error: {out / 'checkpoint.pt'}: writing it failed (File too large); the file is larger than "
        "this file system (or `ulimit -f`) allows; choose another place")
    assert sorted(p.name for p in out.iterdir() if ".tmp" in p.name) == []  # the half-written file is gone


def test_an_out_that_is_a_link_in_a_circle_or_to_nothing_is_one_line(setup, tmp_path, capsys):
    loop, dangling, nowhere = tmp_path / "loop", tmp_path / "dangling", tmp_path / "nowhere"
    loop.symlink_to(loop)
    dangling.symlink_to(nowhere)
    for out, leads in ((loop, "in a circle"), (dangling, "to nothing")):
        assert train.main(flags(setup, out)) == 2
        assert f"--out {out} is a symbolic link that leads {leads}" in one_line_error(capsys, "train.py")
    assert not nowhere.exists()
