"""A run never deletes its own files, writes never follow links, every refusal names a way on that
works, and an OS error while writing names the file (issue 28).

Each test builds its unlucky case (a file system that hands a freed inode number to the next
file, a lock or a temporary name that is a link out of the folder, a run killed as it writes its
first checkpoint, a file too large, ...) and checks that the run's files are whole and loadable,
or the one-line refusal, that nothing outside was written, and that the way on it names is
accepted. Runs are train.py on a tiny random CLIP and a tiny toy world, as in
tests/test_safety_folders.py.
"""

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import eval as eval_script
import train
from tiny import TINY_OPENAI, tiny_world, run_flags, as_flags, one_line_error
from clip_min.model import CLIP
from clip_min.train import checkpoint
from clip_min.train.runlock import own_run_folder
from clip_min.train.runs import load_run, read_adapters, read_selected
from clip_min.weights import save_clip

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
    assert names == ["adapters.pt", "checkpoint.pt", "config.json", "curves.png", "metrics.csv", "metrics.jsonl",
                     "selected.pt", "summary.json"]
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


def test_a_replacing_run_killed_then_resumed_ends_with_its_own_files_only(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train.main(flags(setup, out)) == 0
    (out / "weights.pt").write_bytes(b"an earlier full fine-tuning run's weights")  # the replacing run writes none

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", killed)
        assert train.main(flags(setup, out, lora_rank=8) + ["--overwrite"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"train.py: interrupted before the first checkpoint; go on with: python train.py --resume {out} (from step 0)")
    assert (out / "weights.pt").exists()  # nothing of the replaced run goes before the replacing run has finished
    assert train.main(["--resume", str(out)]) == 0, capsys.readouterr().err
    assert "starts again from step 0" in capsys.readouterr().out  # the checkpoint there was the replaced run's
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "adapters.pt", "checkpoint.pt", "config.json", "curves.png", "metrics.csv", "metrics.jsonl", "selected.pt",
        "summary.json"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["run"]["config"]["lora_rank"] == 8
    assert load_run(out).config["lora_rank"] == 8


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


# ---- 4. every refusal names a way on, and that way is accepted --------------------------------


@dataclass
class Refused:
    """A command train.py refuses: its arguments, the command that started the run it is about, its --out."""

    argv: list[str]
    command: list[str]
    out: Path
    fix: Callable[[], None] | None = None  # what "remove it", "restore a copy", "wait for it" ask of the user


def with_out(argv: list[str], out: Path) -> list[str]:
    i = argv.index("--out")
    return [*argv[:i + 1], str(out), *argv[i + 2:]]


def fixed(case: Refused) -> list[str]:
    case.fix()
    return case.argv


def suggested(line: str, case: Refused, finished: Path) -> list[tuple[str, Callable[[Refused], list[str]]]]:
    """Each way on that ``line`` names, as a function from a fresh copy of the refused case to train.py's arguments."""
    ways = []
    resume = re.search(r"python train\.py --resume (\S+?)(?:,| \(|$)", line)
    if resume:
        assert resume.group(1) == str(case.out), line
        ways.append(("--resume", lambda c: ["--resume", str(c.out)]))
    if "add --overwrite" in line:
        ways.append(("add --overwrite", lambda c: [*c.argv, "--overwrite"]))
    if "its command and --overwrite" in line:
        ways.append(("its command and --overwrite", lambda c: [*c.command, "--overwrite"]))
    if "another --out" in line or "pass --out a new or empty folder" in line:
        ways.append(("another --out", lambda c: with_out(c.command if "--resume" in c.argv else c.argv,
                                                         c.out.parent / "another")))
    if "without --resume" in line:
        ways.append(("without --resume", lambda c: c.command))
    if "pass --resume the --out folder of a train.py run" in line:
        ways.append(("a run folder", lambda c: ["--resume", str(shutil.copytree(finished, c.out.parent / "a_run"))]))
    if "drop --out" in line:
        ways.append(("drop --out", lambda c: c.argv[:c.argv.index("--out")] + c.argv[c.argv.index("--out") + 2:]))
    if "drop one of them" in line:
        ways.append(("drop --overwrite", lambda c: [a for a in c.argv if a != "--overwrite"]))
        ways.append(("drop --resume", lambda c: c.argv[:c.argv.index("--resume")] + c.argv[c.argv.index("--resume") + 2:]))
    if "a resumed run may change only" in line:
        ways.append(("the saved configuration", lambda c: ["--resume", str(c.out)]))
    for words in ("move it", "remove the link", "remove it and run again", "restore a copy of it",
                  "resume with the file the run started from", "wait for it to finish"):
        if re.search(rf"\b{words}\b", line):
            ways.append((words, fixed))
    return ways


def test_every_refusal_of_a_run_folder_names_a_way_on_that_is_accepted(setup, tmp_path, monkeypatch, capsys):
    def command(out, **options):
        return flags(setup, out, **options)

    def pretraining(out):
        world = setup["world"]
        return as_flags(dict(weights=setup["base"], data=world / "concadia", transfer=world / "transfer" / "color",
                             objective="clip", device="cpu", amp="off", max_steps=2, out=out))

    def stopped_at_first_checkpoint(out, argv):
        """Run ``argv`` and kill it as it writes its first checkpoint.pt, leaving the temporary file."""
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()

        def killed(folder, *args, **kwargs):
            (Path(folder) / f".checkpoint.pt.tmp{dead.pid}").write_bytes(b"the first half of a checkpoint")
            raise KeyboardInterrupt

        with monkeypatch.context() as m:
            m.setattr(checkpoint, "save", killed)
            assert train.main(argv) == 130
        return capsys.readouterr().err.strip().splitlines()[-1]

    # The runs the cases start from: finished, killed at its first checkpoint, and pretraining.
    base = tmp_path / "base"
    finished, stopped, pretrained = base / "finished", base / "stopped", base / "pretrained"
    assert train.main(command(finished)) == 0
    interrupted = stopped_at_first_checkpoint(stopped, command(stopped))
    assert train.main(pretraining(pretrained)) == 0
    assert not (stopped / "checkpoint.pt").exists() and (stopped / "config.json").exists()
    capsys.readouterr()

    def copy(run, d):
        return shutil.copytree(run, d / "run")

    def in_the_way(d, make):
        out = d / "out"
        make(out)
        return Refused(command(out), command(out), out, fix=lambda: out.unlink())

    def with_lock_held(d):
        out = d / "run"
        held = ExitStack()
        held.enter_context(own_run_folder(out))
        holders.append(held)
        return Refused(command(out), command(out), out, fix=held.close)

    def link_inside(d, name):
        out = d / "run"
        out.mkdir()
        (d / "outside.txt").write_text("precious")
        (out / name).symlink_to(d / "outside.txt")
        return Refused(command(out), command(out), out, fix=lambda: (out / name).unlink())

    def resume(out, *extra, start=command, fix=None):
        return Refused(["--resume", str(out), *extra], start(out), out, fix)

    def damaged(d, change):
        out = copy(finished, d)
        kept = (out / "checkpoint.pt").read_bytes()
        change(out)
        return resume(out, fix=lambda: (out / "checkpoint.pt").write_bytes(kept))

    def base_replaced(d):
        weights = d / "base.pt"
        shutil.copy(setup["base"], weights)
        out = d / "run"
        stopped_at_first_checkpoint(out, command(out, weights=weights))
        torch.manual_seed(1)
        save_clip(CLIP(TINY_OPENAI), weights)
        return Refused(["--resume", str(out)], command(out, weights=weights), out,
                       fix=lambda: shutil.copy(setup["base"], weights))

    def replaced_then_stopped(d):
        """A run with another rank replacing the finished one (--overwrite), killed at its first checkpoint."""
        out = copy(finished, d)
        stopped_at_first_checkpoint(out, [*command(out, lora_rank=8), "--overwrite"])
        return Refused(command(out, lora_rank=8), command(out, lora_rank=8), out)

    def holding(d, *names):
        out = d / "run"
        out.mkdir()
        for name in names:
            (out / name).write_text("x")
        return out

    cases = {
        # --out
        "a file in the way": lambda d: in_the_way(d, lambda out: out.write_text("mine")),
        "a link in a circle": lambda d: in_the_way(d, lambda out: out.symlink_to(out)),
        "not a run folder": lambda d: Refused(command(holding(d, "holiday.jpg")), command(d / "run"), d / "run"),
        "an unfinished run": lambda d: (lambda out: ((out / "summary.json").unlink(), Refused(command(out), command(out), out))[1])(copy(finished, d)),
        "a run killed writing its first checkpoint": lambda d: (lambda out: Refused(command(out), command(out), out))(copy(stopped, d)),
        "a finished run": lambda d: (lambda out: Refused(command(out), command(out), out))(copy(finished, d)),
        "a replacing run killed writing its first checkpoint": replaced_then_stopped,
        "a pretraining run": lambda d: (lambda out: Refused(pretraining(out), pretraining(out), out))(copy(pretrained, d)),
        "a damaged config.json": lambda d: (lambda out: ((out / "config.json").write_text("{"), Refused(command(out), command(out), out))[1])(copy(finished, d)),
        "a folder in use": with_lock_held,
        "a lock that is a link": lambda d: link_inside(d, ".lock"),
        "a temporary name that is a link": lambda d: link_inside(d, f".config.json.tmp{os.getpid()}"),
        # --resume
        "no such folder": lambda d: resume(d / "run"),
        "no run started yet": lambda d: resume(holding(d, ".lock")),
        "not a run folder to resume": lambda d: resume(holding(d, "holiday.jpg")),
        "a damaged config.json to resume": lambda d: (lambda out: ((out / "config.json").write_text("{"), resume(out))[1])(copy(finished, d)),
        "a pretraining run to resume": lambda d: resume(copy(pretrained, d), start=pretraining),
        "--resume with --overwrite": lambda d: (lambda out: Refused([*command(out), "--resume", str(out), "--overwrite"], command(out), out))(copy(finished, d)),
        "--resume with another --out": lambda d: resume(copy(finished, d), "--out", str(d / "elsewhere")),
        "--resume with another rank": lambda d: resume(copy(finished, d), "--lora-rank", "8"),
        "--resume before the first checkpoint with another rank": lambda d: resume(copy(stopped, d), "--lora-rank", "8"),
        "a truncated checkpoint": lambda d: damaged(d, lambda out: (out / "checkpoint.pt").write_bytes(b"PK\x03\x04")),
        "not a clip_min checkpoint": lambda d: damaged(d, lambda out: torch.save({"step": 2}, out / "checkpoint.pt")),
        "a replaced base before the first checkpoint": base_replaced,
    }
    holders = []
    try:
        walked, lines = {}, {}
        for name, build in cases.items():
            folder = tmp_path / re.sub(r"\W+", "_", name)
            (folder / "refused").mkdir(parents=True)
            first = build(folder / "refused")
            assert train.main(first.argv) == 2, name
            line = one_line_error(capsys, "train.py")
            ways = suggested(line, first, finished)
            assert ways, f"{name}: no way on in: {line}"
            for i, (words, way) in enumerate(ways):
                (folder / f"way{i}").mkdir()
                case = build(folder / f"way{i}")
                assert train.main(way(case)) == 0, f"{name}: {words} from {line}\n{capsys.readouterr().err[-1500:]}"
                capsys.readouterr()
            walked[name], lines[name] = [words for words, _ in ways], line
        # Ctrl-C before the first checkpoint names a way on too.
        (words, way), = suggested(interrupted, Refused(command(stopped), command(stopped), stopped), finished)
        after = copy(stopped, tmp_path / "after_ctrl_c")
        assert "interrupted before the first checkpoint" in interrupted
        assert train.main(way(Refused(command(stopped), command(stopped), after))) == 0
    finally:
        for held in holders:
            held.close()
    # Going on from step 0 is the run that never stopped, and the killed write's leftover is gone.
    assert json.loads((after / "summary.json").read_text())["steps"] == 2
    for name, tensor in read_adapters(finished / "adapters.pt", "cpu")["lora"].items():
        assert torch.equal(read_adapters(after / "adapters.pt", "cpu")["lora"][name], tensor), name
    assert not [p.name for p in after.iterdir() if ".tmp" in p.name]
    # The circle of issue 28: the plain command sends to --resume, which now goes on from step 0.
    assert walked["a run killed writing its first checkpoint"] == ["--resume", "add --overwrite", "another --out"]
    assert walked["a replacing run killed writing its first checkpoint"] == ["--resume", "add --overwrite", "another --out"]
    assert "holds an unfinished run" in lines["a replacing run killed writing its first checkpoint"]  # the summary is the replaced run's
    assert walked["a pretraining run"] == ["add --overwrite", "another --out"]


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
    for out, says in ((loop, "a symbolic link on its path leads in a circle"),
                      (loop / "run", "a symbolic link on its path leads in a circle"),
                      (dangling, "is a symbolic link that leads to nothing")):
        assert train.main(flags(setup, out)) == 2
        assert f"--out {out}{'' if says.startswith('is') else ':'} {says}" in one_line_error(capsys, "train.py")
    assert not nowhere.exists()
