"""The grader: run the exercises' tests in a fresh pytest process and score each exercise.

pytest runs in the repository being graded (a student copy), so it imports that copy's
clip_min. This module is also the pytest plugin (``-p clip_min.exercises.grade``) that records,
for every test, whether it passed and the one-line message of its first failure.

An exercise is
- passed: every one of its tests passes;
- failing: a test fails for any reason other than a blanked function (the first one is shown);
- not started: its tests fail only on ``NotImplementedError("Exercise N: ...")``, its own or an
  earlier exercise's; "unfinished" when some of them already pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import REPOSITORY, Exercise, ExerciseError, number

BLANKED = re.compile(r"NotImplementedError: Exercise (\d+):")
TIME_LIMIT_S = 600  # the whole grading run; the tests take about 10 s on 2 CPU cores


# ---- the pytest plugin ------------------------------------------------------------------------


def pytest_addoption(parser) -> None:
    parser.addoption("--exercise-report", help="write each test's outcome here as JSON (clip_min.exercises check)")
    parser.addoption("--exercise-test", action="append", default=[],
                     help="run only this test (a node id; parametrized cases included); repeat for more")


def selected(node_id: str, tests: list[str]) -> bool:
    """Is ``node_id`` one of ``tests``, or a parametrized case of one?"""
    return any(node_id == t or node_id.startswith(t + "[") for t in tests)


def pytest_collection_modifyitems(config, items) -> None:
    # Selecting here rather than by node ids on the command line: a test file that fails to import
    # must not stop the others, and pytest drops the whole run when a node id's file does not collect.
    tests = config.getoption("--exercise-test")
    if tests:
        keep = [item for item in items if selected(item.nodeid, tests)]
        config.hook.pytest_deselected(items=[item for item in items if not selected(item.nodeid, tests)])
        items[:] = keep


def pytest_configure(config) -> None:
    path = config.getoption("--exercise-report")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "exercise-recorder")


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


class Recorder:
    """Collects {node id: [outcome, message]} and the files that failed to import, then writes them."""

    def __init__(self, path: Path):
        self.path = path
        self.tests: dict[str, list[str]] = {}
        self.import_errors: dict[str, str] = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.passed:
            if report.when == "call":
                self.tests.setdefault(report.nodeid, ["passed", ""])
            return
        if self.tests.get(report.nodeid, ["passed"])[0] != "passed":
            return  # keep the first failure: a teardown error after a failed call says less
        crash = getattr(report.longrepr, "reprcrash", None)
        if report.skipped:  # a skipped grading test has not shown anything, so it does not pass
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            self.tests[report.nodeid] = ["failed", f"skipped: {first_line(reason)}"]
        else:
            self.tests[report.nodeid] = ["failed", first_line(crash.message if crash else report.longrepr)]

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            errors = [line[1:].strip() for line in report.longreprtext.splitlines() if line.startswith("E ")]
            self.import_errors[report.nodeid] = errors[-1] if errors else first_line(report.longreprtext)

    def pytest_sessionfinish(self, session) -> None:
        self.path.write_text(json.dumps({"tests": self.tests, "import_errors": self.import_errors}), encoding="utf-8")


# ---- running and scoring ----------------------------------------------------------------------


@dataclass
class Grade:
    """How one exercise stands."""

    exercise: Exercise
    status: str  # "passed", "failing", "not started" or "unfinished"
    passed: int  # tests (parametrized cases counted one by one) that pass
    total: int
    detail: str  # the first failing assertion, or what to write next
    first_failure: str | None  # node id of the first failing test, to rerun it alone


def run_tests(exercises: list[Exercise], root: Path = REPOSITORY) -> dict:
    """Run the exercises' tests with pytest in ``root``; returns the plugin's record."""
    node_ids = list(dict.fromkeys(t for e in exercises for t in e.tests))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        files = list(dict.fromkeys(t.split("::")[0] for t in node_ids))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "clip_min.exercises.grade",
                   f"--exercise-report={report}", "--continue-on-collection-errors",
                   *(f"--exercise-test={t}" for t in node_ids), *files]
        # -m pytest puts the working directory first on sys.path: the copy's clip_min is the one imported.
        # The graded models are tiny: a second thread only waits on the first (on a busy 2-core
        # machine, 42 s for all twelve exercises with torch's default threads, 11 s with one).
        env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            raise ExerciseError(f"the tests ran past {TIME_LIMIT_S} s; look for an endless loop, then run "
                                "python -m pytest on one exercise's tests to find it") from None
        if not report.is_file():  # e.g. clip_min itself no longer imports; the error is pytest's last line
            last = (done.stderr.strip() or done.stdout.strip() or "(no output)").splitlines()[-1]
            raise ExerciseError(f"pytest stopped before running the tests: {last}")
        return json.loads(report.read_text(encoding="utf-8"))


def grade(exercise: Exercise, record: dict) -> Grade:
    """Score one exercise from the record of a run."""
    results = []  # (node id, outcome, message) of every case of its tests
    for test in exercise.tests:
        cases = [(n, *r) for n, r in record["tests"].items() if selected(n, [test])]
        if not cases:
            path = test.split("::")[0]
            reason = record["import_errors"].get(path)
            cases = [(test, "failed", f"{path} did not import: {reason}" if reason else "did not run")]
        results += cases
    passed = sum(outcome == "passed" for _, outcome, _ in results)
    failures = [(node, text) for node, outcome, text in results if outcome != "passed"]
    if not failures:
        return Grade(exercise, "passed", passed, len(results), "", None)
    real = [(node, text) for node, text in failures if not BLANKED.search(text)]
    if real:
        node, text = real[0]
        return Grade(exercise, "failing", passed, len(results), f"{node.split('::')[-1]}: {text}", node)
    waiting = sorted({int(BLANKED.search(text).group(1)) for _, text in failures})
    own = number(exercise)
    earlier = ", ".join(str(n) for n in waiting if n != own)
    detail = "write " + ", ".join(qualname for _, qualname in exercise.functions) if own in waiting else ""
    if earlier:
        detail += f"; needs exercise {earlier} too" if detail else f"needs exercise {earlier} first"
    return Grade(exercise, "unfinished" if passed else "not started", passed, len(results), detail, failures[0][0])


def scoreboard(grades: list[Grade]) -> str:
    """The table ``check`` prints, with a count and how to see the first failure in full."""
    width = max(len(g.exercise.name) for g in grades)
    lines = [f" #  {'exercise':<{width}}  tests  status"]
    for g in grades:
        status = g.status + (f": {g.detail}" if g.detail else "")
        lines.append(f"{number(g.exercise):>2}  {g.exercise.name:<{width}}  {f'{g.passed}/{g.total}':>5}  {status}")
    counts = {s: sum(g.status == s for g in grades) for s in ("passed", "failing", "unfinished", "not started")}
    lines.append(f"{counts['passed']} of {len(grades)} passed" +
                 "".join(f", {n} {s}" for s, n in counts.items() if n and s != "passed"))
    todo = next((g for g in grades if g.status != "passed"), None)
    if todo is not None:
        lines.append(f"next: exercise {number(todo.exercise)} in {todo.exercise.docs}; "
                     f"its first failing test in full: python -m pytest -q {todo.first_failure}")
    return "\n".join(lines)
