"""python -m clip_min.exercises list | make DIR [--only NAMES] | check [NAMES] | mistakes [--only NAMES] [--table]"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time

from . import EXERCISES, REPOSITORY, ExerciseError, number, select
from .blank import make
from .grade import grade, run_tests, scoreboard


def list_command(args) -> int:
    print(f"{len(EXERCISES)} exercises, in teaching order. Each blanks the functions below; "
          "its docs page ends with what to write.")
    for exercise in EXERCISES:
        files: dict[str, list[str]] = {}
        for path, qualname in exercise.functions:
            files.setdefault(path, []).append(qualname)
        tests = sorted({t.split("::")[0] for t in exercise.tests})
        count = len(exercise.tests)
        print(f"\n{number(exercise):>2}  {exercise.name}: {exercise.title}  ({exercise.docs})")
        for path, names in files.items():
            print(f"    writes  {path}: {', '.join(names)}")
        print(f"    graded  {count} test{'s' if count > 1 else ''} in {', '.join(tests)}")
    return 0


def make_command(args) -> int:
    exercises = select(args.only)
    files = make(args.dir, exercises)
    blanked = sum(len(e.functions) for e in exercises)
    print(f"wrote a student copy of {len(files)} files to {args.dir}: {blanked} functions of "
          f"{len(exercises)} exercises raise NotImplementedError")
    print(f"students grade themselves with: cd {args.dir} && python -m clip_min.exercises check")
    return 0


def check_command(args) -> int:
    exercises = select(args.names)
    # A failure can come from an earlier exercise: grade those too, and show the ones asked for.
    last = max(number(e) for e in exercises)
    graded = [e for e in EXERCISES if number(e) <= last]
    print(f"running the tests of exercises 1 to {last} in {REPOSITORY} ...", flush=True)
    record = run_tests(graded)
    grades = [g for g in grade(graded, record) if g.exercise in exercises]
    print(scoreboard(grades))
    return 0 if all(g.status == "passed" for g in grades) else 1


def mistakes_command(args) -> int:
    if importlib.util.find_spec(f"{__package__}.mistakes") is None:  # make leaves the catalogue out
        raise ExerciseError("this is a student copy: the catalogue of wrong answers stays in the teacher's "
                            "repository; run python -m clip_min.exercises mistakes there")
    mistakes = importlib.import_module(f"{__package__}.mistakes")
    if args.table:
        print(mistakes.table())
        return 0
    chosen = mistakes.select(args.only)
    print(f"applying {len(chosen)} wrong answers one at a time to a copy of {REPOSITORY}, "
          "and running the tests that should catch each ...", flush=True)
    start = time.monotonic()
    outcomes = mistakes.run(chosen, progress=lambda line: print(line, flush=True))
    caught = sum(o.status == "caught" for o in outcomes)
    print(f"{caught} of {len(outcomes)} caught in {time.monotonic() - start:.0f} s" +
          "".join(f"; {n} {s}" for s in ("missed", "broken") if (n := sum(o.status == s for o in outcomes))))
    return 0 if caught == len(outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_min.exercises",
        description="Graded exercises: a student copy with each equation's code blanked, and the tests as grader.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the exercises in teaching order, with their docs and functions"
                        ).set_defaults(func=list_command)
    p = commands.add_parser("make", help="write a student copy of this repository with the exercises blanked")
    p.add_argument("dir", help="a new (or empty) folder for the copy")
    p.add_argument("--only", nargs="+", metavar="NAME", help="blank only these exercises (names or numbers)")
    p.set_defaults(func=make_command)
    p = commands.add_parser("check", help="run the exercises' tests here and print a scoreboard")
    p.add_argument("names", nargs="*", metavar="NAME", help="the exercises to check (default: all)")
    p.set_defaults(func=check_command)
    p = commands.add_parser("mistakes", help="in the teacher's repository: apply each wrong answer of the catalogue "
                            "alone and check that the tests catch it")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these entries (default: the whole catalogue)")
    p.add_argument("--table", action="store_true", help="print the catalogue as a markdown table and stop")
    p.set_defaults(func=mistakes_command)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
