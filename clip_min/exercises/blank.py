"""A student copy of the repository: what a student reads and runs, with the exercises' bodies blanked.

A function is found by parsing its file (``ast``), never by line numbers or text patterns, so the
copy follows the code wherever it moves. What is replaced is the body after the docstring, from
the line after the docstring to the function's last line; the decorators, the signature, the
docstring and any comment above the ``def`` stay.

The copy holds no answer. It takes the package, the pages under docs/, the files at the top of
the repository, and the tests that grade the exercises with the test modules they import; the
rest (the catalogue of wrong answers, which quotes the right line of every blanked body, the
other tests, benchmarks, CI, anything else) stays with the teacher. Before the copy is put in
place, every file in it is searched for the lines of the blanked bodies (:func:`answer_lines`),
and a copy that holds one is refused.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tokenize
import zipfile
import zlib
from pathlib import Path

from . import EXERCISES, REPOSITORY, Exercise, ExerciseError, message, number

# Folders a copy never needs: version control, environments, run outputs and caches.
SKIPPED = {".git", ".venv", "venv", "runs", "__pycache__", ".pytest_cache", ".cache"}
# Besides the files at the top, what a student copy takes whole: the package and its pages (of
# tests/, only what grades).
STUDENT_FOLDERS = ("clip_min", "docs")
# The catalogue of wrong answers: each entry quotes the right text it replaces.
TEACHER_ONLY = ("clip_min/exercises/mistakes.py",)


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


def student_files(files: list[Path], root: Path) -> list[Path]:
    """Of the repository's ``files``, those a student copy takes (see the module's docstring)."""
    kept = {f for f in files if (len(f.parts) == 1 or f.parts[0] in STUDENT_FOLDERS) and f.as_posix() not in TEACHER_ONLY
            and f.suffix != ".pyc" and "__pycache__" not in f.parts}  # compiled code decompiles into its source
    # The grading tests, and the modules of tests/ they import (helpers such as tiny.py), transitively.
    present = {f.as_posix() for f in files}
    todo = sorted({t.split("::")[0] for e in EXERCISES for t in e.tests})
    while todo:
        test = todo.pop()
        if test not in present or Path(test) in kept:
            continue
        kept.add(Path(test))
        tree = ast.parse((root / test).read_text(encoding="utf-8"), filename=test)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            todo += [f"tests/{n}.py" for n in names if "." not in n]
    return sorted(kept)


def _code_words(source: str) -> list[tuple[str, int]]:
    """Each line of ``source`` without its comment, and the count of its names and numbers."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    return [(line, len(re.findall(r"\w+", line))) for line in lines]


def squeeze(text: str) -> str:
    """``text`` without whitespace, so that reformatting does not hide a line."""
    return re.sub(r"\s+", "", text)


def answer_lines(exercises: list[Exercise], root: Path) -> dict[str, tuple[Exercise, str]]:
    """What a student copy must not hold: each line of each blanked body -> (exercise, function).

    A line is its code without the comment, whitespace removed. Left out: lines with fewer than
    three names and numbers (``return x``, ``)``, ``else:``), which any Python file holds, and the
    exercise's ``shared`` lines, which the copy's other code holds.
    """
    answers = {}
    for exercise in exercises:
        shared = {squeeze(line) for line in exercise.shared}
        for path, qualname in exercise.functions:
            source = (root / path).read_text(encoding="utf-8")
            start, end = body_lines(find_function(ast.parse(source, filename=path), qualname))
            for line, words in _code_words(source)[start - 1 : end]:
                if words >= 3 and squeeze(line) not in shared:
                    answers.setdefault(squeeze(line), (exercise, qualname))
    return answers


def texts_in(data: bytes, depth: int = 0) -> list[str]:
    """What can be read back out of a file: its bytes as text, and what a zip archive (a torch .pt is
    one) or a gzip, bz2, xz or zlib stream holds, two levels deep (a tar is its files' bytes)."""
    texts = [data.decode("utf-8", errors="replace")]
    if depth == 2:
        return texts
    inner: list[bytes] = []
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inner = [archive.read(entry) for entry in archive.infolist() if not entry.is_dir()]
    else:
        for decompress in (gzip.decompress, bz2.decompress, lzma.decompress, zlib.decompress):
            try:
                inner = [decompress(data)]
                break
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                continue
    for blob in inner:
        texts += texts_in(blob, depth + 1)
    return texts


def find_leak(folder: Path, answers: dict[str, tuple[Exercise, str]]) -> str | None:
    """A sentence naming the first file under ``folder`` that holds an answer line, or None."""
    if not answers:
        return None
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for text in texts_in(path.read_bytes()):
            # As written, and with backslash escapes undone (a line quoted in a JSON notebook or a string).
            unescaped = text.replace('\\"', '"').replace("\\'", "'").replace("\\\\", "\\")
            squeezed = {squeeze(text), squeeze(unescaped)}
            for line, (exercise, qualname) in answers.items():
                if any(line in t for t in squeezed):
                    return (f"{path.relative_to(folder).as_posix()} holds a line of the answer to exercise "
                            f"{number(exercise)} ({qualname}): {line}")
    return None


def _write_copy(root: Path, dest: Path, files: list[Path], by_file: dict[str, list[tuple[str, str]]],
                answers: dict[str, tuple[Exercise, str]]) -> None:
    """Write ``files`` of ``root`` to ``dest``, blanking ``by_file``'s bodies; all or nothing."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExerciseError(f"{dest} already exists and is not an empty folder; give a new folder for the copy")
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
        leak = find_leak(staging, answers)
        if leak:
            raise ExerciseError(f"a student copy would hold an answer: {leak}; rewrite it there, or if other code "
                                "must hold that line too, add it to the exercise's shared lines in EXERCISES")
        if dest.exists():
            dest.rmdir()  # empty, as checked above
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def make(dest: str | Path, exercises: list[Exercise] | None = None, root: str | Path | None = None) -> list[Path]:
    """Write a student copy of ``root`` (this repository by default) to ``dest``; returns the files copied.

    ``exercises`` are the ones to blank, all of them by default.
    ``dest`` must be new or empty. The copy is assembled beside it and renamed into place, so a
    failure leaves no half-made copy.
    """
    root = Path(root or REPOSITORY).resolve()
    dest = Path(dest).resolve()
    chosen = list(EXERCISES) if exercises is None else exercises
    files = student_files([f for f in repository_files(root) if not (root / f).resolve().is_relative_to(dest)], root)
    _write_copy(root, dest, files, blanks_by_file(chosen), answer_lines(chosen, root))
    return files


def copy_repository(dest: str | Path, root: str | Path | None = None) -> list[Path]:
    """Copy every file of ``root`` (this repository by default) to the new folder ``dest``, nothing blanked.

    For the teacher's tools, which need the whole repository: the catalogue and all the tests.
    """
    root = Path(root or REPOSITORY).resolve()
    dest = Path(dest).resolve()
    files = [f for f in repository_files(root) if not (root / f).resolve().is_relative_to(dest)]
    _write_copy(root, dest, files, {}, {})
    return files
