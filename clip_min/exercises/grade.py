"""The grader: run the exercises' tests in a fresh pytest process and score each exercise.

pytest runs in the repository being graded (a student copy), so it imports that copy's
clip_min. This module is also the pytest plugin (``-p clip_min.exercises.grade``) that records,
for every test, whether it passed, the one-line message of its first failure, and which
exercises' functions it ran (a profiler on while the test runs).

A test counts once however many parametrized cases it has: it passes when all of them pass. An
exercise is
- passed: every one of its tests passes;
- failing: a test fails in its own code (the first one is shown);
- not started: a function of it still raises its ``NotImplementedError("Exercise N: ...")``;
  "unfinished" when some of its tests already pass;
- waiting: its tests fail only because of other exercises, named as "needs exercise N": they
  reach that one's NotImplementedError, or they ran its code and it is wrong (a test failed in
  its code alone, or it comes earlier and is failing or not started), or they failed in its code
  without reaching this exercise's.
"""

from __future__ import annotations

import cProfile
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import EXERCISES, REPOSITORY, Exercise, ExerciseError, message, number

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


def exercise_code() -> tuple[dict, list[int]]:
    """The code object of every exercise function this process imports -> its exercise's number; and
    the exercises with a function that still raises its NotImplementedError."""
    codes, blank = {}, set()
    for exercise in EXERCISES:
        for path, qualname in exercise.functions:
            try:
                target = importlib.import_module(path.removesuffix(".py").replace("/", "."))
                for part in qualname.split("."):
                    target = getattr(target, part)
                function = inspect.unwrap(target)  # under a decorator such as no_grad
                source = inspect.getsource(function)
            except Exception:  # a module that does not import: its tests report that
                continue
            codes[function.__code__] = number(exercise)
            if f"NotImplementedError({json.dumps(message(exercise, qualname))})" in source:
                blank.add(number(exercise))
    return codes, sorted(blank)


class Recorder:
    """Collects {node id: [outcome, message, exercises run]} and the files that failed to import, then writes them."""

    def __init__(self, path: Path):
        self.path = path
        self.tests: dict[str, list] = {}
        self.import_errors: dict[str, str] = {}
        self.codes: dict | None = None
        self.blank: list[int] = []
        self.profile: cProfile.Profile | None = None

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        if self.codes is None:  # after collection, when the tests have imported the copy's clip_min
            self.codes, self.blank = exercise_code()
        self.profile = cProfile.Profile(builtins=False)  # the exercises are Python functions

    # The profiler runs while a test's fixtures and body run, and not while pytest writes up a
    # failure, which costs more than a small test's body.
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        yield from self._profiled()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        yield from self._profiled()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        yield from self._profiled()

    def _profiled(self):
        self.profile.enable()
        try:
            yield
        finally:
            self.profile.disable()

    def pytest_runtest_logfinish(self, nodeid, location) -> None:
        ran = {self.codes[entry.code] for entry in self.profile.getstats() if entry.code in self.codes}
        self.tests.setdefault(nodeid, ["passed", ""]).append(sorted(ran))

    def pytest_runtest_logreport(self, report) -> None:
        if report.passed:
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
        record = {"tests": self.tests, "import_errors": self.import_errors, "blank": self.blank}
        self.path.write_text(json.dumps(record), encoding="utf-8")


# ---- running and scoring ----------------------------------------------------------------------


@dataclass
class Grade:
    """How one exercise stands."""

    exercise: Exercise
    status: str  # "passed", "failing", "not started", "unfinished" or "waiting"
    passed: int  # its tests that pass (a parametrized test passes when all its cases do)
    total: int
    detail: str  # the first failing assertion, what to write next, or the exercise it needs
    first_failure: str | None  # node id of the first failing test case, to rerun it alone


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


def cases(test: str, record: dict) -> list[tuple[str, str, str, list[int]]]:
    """(node id, outcome, message, exercises it ran) of each case of ``test`` in the record."""
    found = [(node, *result) for node, result in record["tests"].items() if selected(node, [test])]
    if found:
        return found
    path = test.split("::")[0]
    reason = record["import_errors"].get(path)
    return [(test, "failed", f"{path} did not import: {reason}" if reason else "did not run", [])]


def grade(exercises: list[Exercise], record: dict) -> list[Grade]:
    """Score the exercises from the record of a run, in teaching order.

    A failure that ran other exercises' code is blamed on those of them that are wrong for certain
    (a test failed in their code alone) or, if earlier and graded here too, failing or not started;
    so ``exercises`` should hold every exercise before the last one of interest.
    """
    # A test that failed running one exercise's code and no other's shows that exercise is wrong.
    alone = {ran[0] for outcome, text, ran in record["tests"].values()
             if outcome != "passed" and len(ran) == 1 and not BLANKED.search(text)}
    grades: dict[int, Grade] = {}
    for exercise in sorted(exercises, key=number):
        own = number(exercise)
        results = [cases(test, record) for test in exercise.tests]
        passed = sum(all(outcome == "passed" for _, outcome, _, _ in found) for found in results)
        failures = [(node, text, set(ran)) for found in results for node, outcome, text, ran in found if outcome != "passed"]
        mine, blank, needs, unreached = [], own in record["blank"], set(), None
        for node, text, ran in failures:
            reached = BLANKED.search(text)
            # A waiting exercise is not the cause: the ones it waits on are, if this test ran their code.
            behind = {n for n in ran - {own} if n in alone or (n in grades and grades[n].status not in ("passed", "waiting"))}
            if reached:
                blank |= int(reached.group(1)) == own
                needs |= {int(reached.group(1))} - {own}
                continue
            if own not in ran and ran:  # it failed in other exercises' code without running this one's
                behind = behind or ran
                unreached = unreached or f"{node.split('::')[-1]} fails in exercise {min(behind)}'s code before reaching this one's"
            if behind:
                needs |= behind
            else:
                mine.append((node, text))
        first = failures[0][0] if failures else None
        needed = ", ".join(str(n) for n in sorted(needs))
        if mine:
            node, text = mine[0]
            status, detail, first = "failing", f"{node.split('::')[-1]}: {text}", node
        elif blank:
            status = "unfinished" if passed else "not started"
            detail = "write " + ", ".join(qualname for _, qualname in exercise.functions)
            detail += f"; needs exercise {needed} too" if needs else ""
        elif needs:
            status, detail = "waiting", f"needs exercise {needed} first" + (f": {unreached}" if unreached else "")
        else:
            status, detail = "passed", ""
        grades[own] = Grade(exercise, status, passed, len(results), detail, first)
    return [grades[number(e)] for e in exercises]


def scoreboard(grades: list[Grade]) -> str:
    """The table ``check`` prints, with a count and how to see the first failure in full."""
    width = max(len("exercise"), *(len(g.exercise.name) for g in grades))
    lines = [f" #  {'exercise':<{width}}  tests  status"]
    for g in grades:
        status = g.status + (f": {g.detail}" if g.detail else "")
        lines.append(f"{number(g.exercise):>2}  {g.exercise.name:<{width}}  {f'{g.passed}/{g.total}':>5}  {status}")
    counts = {s: sum(g.status == s for g in grades) for s in ("passed", "failing", "waiting", "unfinished", "not started")}
    lines.append(f"{counts['passed']} of {len(grades)} passed" +
                 "".join(f", {n} {s}" for s, n in counts.items() if n and s != "passed"))
    # What to do next is the first exercise that waits on no other one.
    todo = next((g for g in grades if g.status not in ("passed", "waiting")), None)
    todo = todo or next((g for g in grades if g.status != "passed"), None)
    if todo is not None:
        lines.append(f"next: exercise {number(todo.exercise)} in {todo.exercise.docs}; "
                     f"its first failing test in full: python -m pytest -q {todo.first_failure}")
    return "\n".join(lines)
