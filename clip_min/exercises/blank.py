"""A student copy of the repository: every file as it is, except the exercises' function bodies.

A function is found by parsing its file (``ast``), never by line numbers or text patterns, so the
copy follows the code wherever it moves. What is replaced is the body after the docstring, from
the line after the docstring to the function's last line; the decorators, the signature, the
docstring and any comment above the ``def`` stay.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

from . import EXERCISES, REPOSITORY, Exercise, ExerciseError, message

# Folders a copy never needs: version control, environments, run outputs and caches.
SKIPPED = {".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".cache"}


def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The def named ``qualname`` ("f" or "Class.method") at module or class level, or None."""
    scope, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
        scope = node.body
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def has_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """First and last line (1-based, inclusive) of the body after the docstring."""
    start = node.body[0].end_lineno + 1 if has_docstring(node) else node.body[0].lineno
    return start, node.end_lineno


def blank_source(source: str, blanks: list[tuple[str, str]], path: str = "<source>") -> str:
    """``source`` with each (qualified name, message) function's body replaced by a raise of the message."""
    tree = ast.parse(source, filename=path)
    lines = source.splitlines(keepends=True)
    spans = []
    for qualname, text in blanks:
        node = find_function(tree, qualname)
        if node is None:
            raise ExerciseError(f"{path} has no function {qualname}; the code moved, so update EXERCISES in "
                                "clip_min/exercises/__init__.py to name where it is now")
        start, end = body_lines(node)
        if start > end or start <= node.lineno:
            raise ExerciseError(f"{path}: {qualname} has no body on lines of its own after its docstring to blank")
        indent = " " * node.body[0].col_offset
        spans.append((start, end, f"{indent}raise NotImplementedError({json.dumps(text)})\n"))
    for start, end, raise_line in sorted(spans, reverse=True):  # from the bottom, so earlier lines keep their numbers
        lines[start - 1 : end] = [raise_line]
    return "".join(lines)


def repository_files(root: Path) -> list[Path]:
    """The repository's files, relative to ``root``: git's tracked and unignored ones, else a walk."""
    root = root.resolve()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True, check=True)
        if Path(top.stdout.strip()).resolve() == root:
            listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                    cwd=root, capture_output=True, check=True).stdout
            names = sorted({Path(name) for name in os.fsdecode(listed).split("\0") if name})
            return [name for name in names if (root / name).is_file()]  # tracked files deleted here are left out
    except (OSError, subprocess.CalledProcessError):
        pass  # no git, or not a repository: a copy made by make
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if s not in SKIPPED)
        files += [Path(folder, n).relative_to(root) for n in sorted(names) if not n.endswith(".pyc")]
    return files


def blanks_by_file(exercises: list[Exercise]) -> dict[str, list[tuple[str, str]]]:
    """file -> [(qualified name, the message it raises)] for the chosen exercises."""
    by_file: dict[str, list[tuple[str, str]]] = {}
    for exercise in exercises:
        for path, qualname in exercise.functions:
            by_file.setdefault(path, []).append((qualname, message(exercise, qualname)))
    return by_file


def make(dest: str | Path, exercises: list[Exercise] | None = None, root: str | Path | None = None) -> list[Path]:
    """Write a student copy of ``root`` (this repository by default) to ``dest``; returns the files copied.

    ``exercises`` are the ones to blank, all of them by default.
    ``dest`` must be new or empty. The copy is assembled beside it and renamed into place, so a
    failure leaves no half-made copy.
    """
    root = Path(root or REPOSITORY).resolve()
    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExerciseError(f"{dest} already exists and is not an empty folder; give a new folder for the copy")
    by_file = blanks_by_file(list(EXERCISES) if exercises is None else exercises)
    files = [f for f in repository_files(root) if not (root / f).resolve().is_relative_to(dest)]
    missing = sorted(set(by_file) - {f.as_posix() for f in files})
    if missing:
        raise ExerciseError(f"the exercises name {', '.join(missing)}, which the repository does not have; "
                            "update EXERCISES in clip_min/exercises/__init__.py")
    staging = dest.with_name(f".{dest.name}.partial{os.getpid()}")
    try:
        for f in files:
            target = staging / f
            target.parent.mkdir(parents=True, exist_ok=True)
            blanks = by_file.get(f.as_posix())
            if blanks:
                source = (root / f).read_text(encoding="utf-8")
                target.write_text(blank_source(source, blanks, f.as_posix()), encoding="utf-8")
                shutil.copymode(root / f, target)
            else:
                shutil.copy2(root / f, target)
        if dest.exists():
            dest.rmdir()  # empty, as checked above
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files
