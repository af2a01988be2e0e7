"""The course kit (clip_min.exercises): a student copy blanks exactly the listed bodies, and the grader sees it.

Each check here reads the copy with its own means (a line diff, a call of every listed function
in a fresh interpreter, pytest's own outcomes through the scoreboard) rather than trusting the
code that made it.
"""

import ast
import bz2
import difflib
import gzip
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tokenize
import zipfile
import zlib
from pathlib import Path

import pytest

from clip_min.exercises import EXERCISES, ExerciseError, mistakes, number
from clip_min.exercises.__main__ import main
from clip_min.exercises.blank import blank_source, copy_repository, make
from clip_min.exercises.grade import grade, run_tests, scoreboard

ROOT = Path(__file__).resolve().parent.parent


def defs(tree: ast.Module) -> dict[str, ast.AST]:
    """qualified name -> def node, for functions at module level and in classes."""
    found = {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found[prefix + node.name] = node
            elif isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return found


def listed() -> dict[str, dict[str, int]]:
    """file -> {qualified name: exercise number} for every blanked function."""
    by_file: dict[str, dict[str, int]] = {}
    for exercise in EXERCISES:
        for path, qualname in exercise.functions:
            by_file.setdefault(path, {})[qualname] = number(exercise)
    return by_file


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def check(copy: Path, *names: str) -> tuple[int, dict[str, str]]:
    """Run the copy's own grader as a student would; returns its exit code and {exercise name: status}."""
    done = subprocess.run([sys.executable, "-m", "clip_min.exercises", "check", *names], cwd=copy,
                          capture_output=True, text=True, timeout=600)
    rows = {}
    for line in done.stdout.splitlines():
        m = re.match(r"\s*\d+\s+(\S+)\s+\d+/\d+\s+(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return done.returncode, rows


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A student copy with every exercise blanked."""
    copy = tmp_path_factory.mktemp("course") / "clip_min_course"
    copied = make(copy)
    assert files_under(copy) == {f.as_posix() for f in copied}
    return copy


def test_the_table_names_functions_and_tests_that_exist():
    names = [e.name for e in EXERCISES]
    assert len(set(names)) == len(names)
    for exercise in EXERCISES:
        assert (ROOT / exercise.docs).is_file(), exercise.docs
        heading = re.compile(rf"^## Exercise {number(exercise)}: ", re.MULTILINE)
        assert heading.search((ROOT / exercise.docs).read_text(encoding="utf-8")), \
            f"{exercise.docs} has no '## Exercise {number(exercise)}: ...' section"
        for path, qualname in exercise.functions:
            assert qualname in defs(ast.parse((ROOT / path).read_text(encoding="utf-8"))), \
                f"exercise {exercise.name}: {path} has no {qualname}; update EXERCISES in clip_min/exercises/__init__.py"
        for test in exercise.tests:
            path, name = test.split("::")
            assert name in defs(ast.parse((ROOT / path).read_text(encoding="utf-8"))), \
                f"exercise {exercise.name}: {path} has no test {name}"


def test_student_copy_blanks_exactly_the_listed_functions(course):
    copy = course
    assert {"README.md", "train.py", "clip_min/exercises/__init__.py", "tests/test_losses.py"} <= files_under(copy)

    # Outside the listed bodies, every line is as it was.
    blanked = listed()
    for name in files_under(copy):
        before, after = (ROOT / name).read_bytes(), (copy / name).read_bytes()
        if name not in blanked:
            assert before == after, f"{name} changed"
            continue
        nodes = defs(ast.parse(before))
        bodies = []  # 0-based half-open line ranges of the listed bodies after their docstrings
        for qualname in blanked[name]:
            node, first = nodes[qualname], nodes[qualname].body[0]
            documented = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
            bodies.append((first.end_lineno if documented else first.lineno - 1, node.end_lineno))
        old, new = before.decode().splitlines(), after.decode().splitlines()
        for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
            if tag != "equal":
                assert any(start <= i1 and i2 <= end for start, end in bodies), f"{name}: lines {i1 + 1}-{i2} changed"
        assert len(new) == len(old) - sum(end - start - 1 for start, end in bodies)
        copied_nodes = defs(ast.parse(after))
        for qualname, node in nodes.items():  # the copy still has every def, with the same signature
            assert ast.dump(copied_nodes[qualname].args) == ast.dump(node.args), f"{name}: {qualname}"

    # Each listed function, called in a fresh interpreter on the copy, raises its exercise's message.
    probe = """
import importlib, inspect, json, sys
results = {}
for path, qualname in json.loads(sys.argv[1]):
    target = importlib.import_module(path[:-3].replace("/", "."))
    for part in qualname.split("."):
        target = getattr(target, part)
    params = inspect.signature(target).parameters.values()
    args = [None for p in params if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    kwargs = {p.name: None for p in params if p.default is p.empty and p.kind == p.KEYWORD_ONLY}
    try:
        target(*args, **kwargs)
        results[qualname] = "returned"
    except NotImplementedError as error:
        results[qualname] = str(error)
print(json.dumps(results))
"""
    functions = [[path, q] for path, names in blanked.items() for q in names]
    done = subprocess.run([sys.executable, "-c", probe, json.dumps(functions)], cwd=copy, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    raised = json.loads(done.stdout)
    for path, names in blanked.items():
        for qualname, n in names.items():
            assert raised[qualname].startswith(f"Exercise {n}: write {qualname}; see docs/"), (qualname, raised[qualname])


# ---- a student copy holds no answer ---------------------------------------------------------------


def answer_lines() -> dict[tuple[str, str], set[str]]:
    """(file, qualified name) -> the lines of its body after the docstring, as a student could find them.

    The rule: a line is its code, comment dropped, with all whitespace removed (so a reformatted
    or quoted copy still matches); lines with fewer than three names and numbers (`return x`, `)`,
    `else:`) are left out, as any Python file holds them, and so are the lines an exercise declares
    ``shared`` with other code of the copy (checked below to be such lines).
    """
    found = {}
    for exercise in EXERCISES:
        shared = {re.sub(r"\s", "", line) for line in exercise.shared}
        for path, qualname in exercise.functions:
            source = (ROOT / path).read_text(encoding="utf-8")
            node = defs(ast.parse(source))[qualname]
            first = node.body[0]
            documented = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
            body = range(first.end_lineno + 1 if documented else first.lineno, node.end_lineno + 1)
            code = {n: line for n, line in enumerate(source.splitlines(), 1) if n in body}
            for token in tokenize.generate_tokens(io.StringIO(source).readline):
                if token.type == tokenize.COMMENT and token.start[0] in code:
                    code[token.start[0]] = code[token.start[0]][: token.start[1]]
            found[path, qualname] = {re.sub(r"\s", "", line) for line in code.values()
                                     if len(re.findall(r"\w+", line)) >= 3} - shared
    return found


def readable(data: bytes, depth: int = 0) -> list[str]:
    """The texts a file holds: its bytes, and what is inside a zip (a .pt), gzip, bz2, xz or zlib stream."""
    texts = [data.decode("utf-8", errors="replace")]
    inner = []
    if depth < 2 and data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inner = [archive.read(name) for name in archive.namelist()]
    elif depth < 2 and data.startswith(b"\x1f\x8b"):
        inner = [gzip.decompress(data)]
    elif depth < 2 and data.startswith(b"BZh"):
        inner = [bz2.decompress(data)]
    elif depth < 2 and data.startswith(b"\xfd7zXZ\x00"):
        inner = [lzma.decompress(data)]
    elif depth < 2 and len(data) > 1 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:  # zlib: git objects
        inner = [zlib.decompress(data)]
    for blob in inner:
        texts += readable(blob, depth + 1)
    # Quoted in a string or a JSON notebook, a line has its quotes escaped: read it with them undone too.
    return [variant for text in texts for variant in (text, re.sub(r"\\(.)", r"\1", text))]


def lines_found(data: bytes, lines: set[str]) -> set[str]:
    squeezed = [re.sub(r"\s", "", text) for text in readable(data)]
    return {line for line in lines if any(line in text for text in squeezed)}


def leaks(data: bytes, answers: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    """(file, qualified name) -> the lines of its answer that ``data`` holds, for those it holds any of."""
    found = lines_found(data, set().union(*answers.values()))
    return {function: lines & found for function, lines in answers.items() if lines & found}


def test_a_student_copy_holds_no_line_of_any_answer(course):
    answers = answer_lines()
    assert all(answers.values()), [f for f, lines in answers.items() if not lines]  # every function is checked
    everything = set().union(*answers.values())

    # The reader finds a line wherever it hides: the teacher's catalogue quotes many; a deflated zip, a
    # gzip and a JSON notebook with its quotes escaped hold the one written into them here.
    catalogue = (ROOT / "clip_min/exercises/mistakes.py").read_bytes()
    assert len(lines_found(catalogue, everything)) >= 20
    line = "raise ValueError(f\"k must be in 0..{R.shape[1]} (the rotation's size), got {k}\")"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.py", line)
    for data in (zipped.getvalue(), gzip.compress(line.encode()), json.dumps({"source": [line + "\n"]}).encode()):
        assert lines_found(data, {re.sub(r"\s", "", line)}), data[:20]

    files = [p for p in course.rglob("*") if p.is_file()]
    names = {p.relative_to(course).as_posix() for p in files}
    assert "clip_min/exercises/mistakes.py" not in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n or n.startswith(".git/")]
    assert not [n for n in names if n.startswith(("bench/", ".ci/"))]
    for path in files:
        found = leaks(path.read_bytes(), answers)
        assert not found, f"{path.relative_to(course)} holds lines of these answers: {found}"

    # A shared line is one the copy's own code holds, so declaring it hides nothing else.
    code = {line.strip() for p in files if p.suffix == ".py" for line in p.read_text(encoding="utf-8").splitlines()}
    for exercise in EXERCISES:
        for line in exercise.shared:
            assert line in code, f"exercise {exercise.name} declares {line!r} shared, but no code of the copy holds it"


def test_make_refuses_a_copy_that_would_hold_an_answer(tmp_path):
    """A teacher's notebook among the pages, or a zip in the package, quoting a body: no copy, and one line why."""
    teacher = tmp_path / "teacher"
    copy_repository(teacher)
    line = "R_k = R[:, :k]  # (w, k): the rotated directions that make up Y"
    notebook = json.dumps({"cells": [{"source": ["def interchange(h_base, h_source, R, k):\n", f"    {line}\n"]}]})
    (teacher / "docs" / "solutions.ipynb").write_text(notebook, encoding="utf-8")
    with pytest.raises(ExerciseError, match=r"docs/solutions.ipynb holds a line of the answer to exercise 5 \(interchange\)"):
        make(tmp_path / "course", root=teacher)
    (teacher / "docs" / "solutions.ipynb").unlink()
    with zipfile.ZipFile(teacher / "clip_min" / "answers.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("lora.py", "return (self.lora_B @ self.lora_A) * self.scaling\n")
    with pytest.raises(ExerciseError, match=r"clip_min/answers.zip holds a line of the answer to exercise 3"):
        make(tmp_path / "course", root=teacher)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]  # no copy, and nothing half made


def test_mistakes_in_a_student_copy_refuses_in_one_line(course):
    for argv in (["mistakes"], ["mistakes", "--table"]):
        done = subprocess.run([sys.executable, "-m", "clip_min.exercises", *argv], cwd=course,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and not done.stdout, done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "the teacher's repository" in done.stderr, done.stderr


def test_the_grader_reports_every_exercise_not_started(course, capsys):
    record = run_tests(list(EXERCISES), root=course)  # pytest in the copy, on the copy's clip_min
    grades = {g.exercise.name: g for g in grade(list(EXERCISES), record)}
    assert {name: g.status for name, g in grades.items()} == {e.name: "not started" for e in EXERCISES}
    assert grades["attention"].detail == "write quick_gelu, MultiheadAttention.forward"
    assert grades["lora"].detail.endswith("; needs exercise 1 too")  # its tests build a model, which needs attention
    assert grades["eq7"].detail == "write route_gradient; needs exercise 10 too"  # blank, and behind a blank
    # list and check count tests alike: a parametrized test is one test, however many cases it runs.
    assert main(["list"]) == 0
    listed_counts = dict(re.findall(r"^\s*\d+\s+(\S+): .*\n(?:.*\n)*?\s+graded\s+(\d+) tests? in", capsys.readouterr().out,
                                    re.MULTILINE))
    assert {name: int(n) for name, n in listed_counts.items()} == {name: g.total for name, g in grades.items()}
    assert all(g.passed == 0 and g.total == len(g.exercise.tests) for g in grades.values())
    attention_cases = [n for n in record["tests"] if n.startswith("tests/test_model.py::test_attention_")]
    assert len(attention_cases) > grades["attention"].total == 2
    # The teacher's page shows this scoreboard of a fresh copy: each of its rows as check prints it.
    page = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8").splitlines()
    for row in scoreboard(list(grades.values())).splitlines():
        if row.lstrip()[:1].isdigit():
            assert row.rstrip() in page, f"docs/teaching.md's scoreboard of a fresh copy is stale; check prints:\n{row}"


def record_of(*tests: tuple[str, str, list[int]], blank: tuple[int, ...] = ()) -> dict:
    """A record as the plugin writes it: {node id: [outcome, message, exercises run]}; passed unless a message is given."""
    return {"tests": {node: ["failed" if text else "passed", text, ran] for node, text, ran in tests},
            "import_errors": {}, "blank": list(blank)}


def test_a_failure_is_blamed_on_the_exercise_it_comes_from():
    attention, text_tower, lora, eq1 = EXERCISES[:4]
    ok = [(t, "", [1]) for t in attention.tests] + [(t, "", [1, 2]) for t in text_tower.tests]
    lora_tests = [(t, "", [1, 3]) for t in lora.tests if "test_learning" not in t]
    training = "tests/test_learning.py::test_lora_with_eq1_teaches_a_tiny_clip_to_prefer_descriptions"
    eq1_unit = eq1.tests[0]

    # Exercise 1 passes its own tests, yet a LoRA test fails in its code without reaching LoRA's.
    failing = [(lora_tests[0][0], "AssertionError: no gradient", [1])]
    grades = grade([attention, text_tower, lora], record_of(*ok, *lora_tests[1:], *failing, (training, "", [1, 2, 3, 4])))
    assert [g.status for g in grades] == ["passed", "passed", "waiting"]
    name = lora_tests[0][0].split("::")[-1]
    assert grades[2].detail == f"needs exercise 1 first: {name} fails in exercise 1's code before reaching this one's"

    # Eq. 1 is wrong on its own (its unit test ran only its code): LoRA's training run waits on it.
    record = record_of(*ok, *lora_tests, (training, "AssertionError: 6%", [1, 2, 3, 4]), (eq1_unit, "assert 2.5 == 5.7", [4]))
    grades = grade([attention, text_tower, lora, eq1], record)
    assert [(g.status, g.passed, g.total) for g in grades[2:]] == [("waiting", 9, 10), ("failing", 0, 2)]
    assert grades[2].detail == "needs exercise 4 first"
    assert grades[3].detail == f"{eq1_unit.split('::')[-1]}: assert 2.5 == 5.7"

    # Only the shared training run fails: nothing tells which of the two is wrong, so the earlier one is.
    record = record_of(*ok, *lora_tests, (training, "AssertionError: 6%", [1, 2, 3, 4]), (eq1_unit, "", [4]))
    assert [(g.status, g.detail) for g in grade([attention, text_tower, lora, eq1], record)[2:]] == \
        [("failing", f"{training.split('::')[-1]}: AssertionError: 6%"), ("waiting", "needs exercise 3 first")]

    # An exercise with a function still blank is not started, whatever else its failures say.
    record = record_of(*ok, *lora_tests[1:], (lora_tests[0][0], "AssertionError: no gradient", [1]),
                       (training, "NotImplementedError: Exercise 4: write _two_way_ce; see docs", [1, 2, 3]), blank=(3, 4))
    assert [(g.status, g.detail) for g in grade([attention, text_tower, lora], record)][2] == \
        ("unfinished", "write " + ", ".join(q for _, q in lora.functions) + "; needs exercise 1, 4 too")

    # A parametrized test passes when all of its cases do.
    cases = [(f"{attention.tests[0]}[{i}]", "" if i else "AssertionError", [1]) for i in range(3)]
    assert [(g.status, g.passed, g.total) for g in grade([attention], record_of(*cases, (attention.tests[1], "", [1])))] == \
        [("failing", 1, 2)]


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path.name} no longer holds {old!r}; pick another wrong body"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_restored_bodies_pass_and_wrong_ones_fail(tmp_path):
    copy = tmp_path / "course"
    make(copy)
    for name in listed():  # the reference bodies back
        shutil.copy2(ROOT / name, copy / name)
    # Eq. 1 with its sign flipped (the caption should win), and Eq. 4 with R transposed.
    replace_once(copy / "clip_min/losses.py", "return _two_way_ce(c_cap, c_des, target=1)",
                 "return _two_way_ce(c_cap, c_des, target=0)")
    replace_once(copy / "clip_min/intervention.py", "R_k = R[:, :k]", "R_k = R.T[:, :k]")
    code, rows = check(copy)
    assert code == 1
    assert rows["eq1"].startswith("failing: test_eq1_behavioral_loss_prefers_the_description: assert"), rows["eq1"]
    assert rows["interchange"].startswith("failing: test_eq4_interchange_equals_rotate_swap_unrotate"), rows
    # What builds on them waits on them: LoRA's training check trains with Eq. 1, and dii calls interchange.
    assert rows["lora"] == "waiting: needs exercise 4 first", rows
    assert rows["dii"] == "waiting: needs exercise 5 first", rows
    right = [e.name for e in EXERCISES if e.name not in ("eq1", "interchange", "lora", "dii")]
    assert {name: rows[name] for name in right} == {name: "passed" for name in right}


def test_attention_without_the_lora_hook_is_named_as_the_cause(tmp_path):
    """Exercise 1 written without in_proj_lora's update: it fails, and LoRA (blank, then written) names it."""
    copy = tmp_path / "course"
    make(copy, exercises=[EXERCISES[0], EXERCISES[2]])
    shutil.copy2(ROOT / "clip_min/model.py", copy / "clip_min/model.py")
    replace_once(copy / "clip_min/model.py", "        if self.in_proj_lora is not None:\n            qkv = qkv + self.in_proj_lora(x)\n", "")
    code, rows = check(copy, "attention", "lora")
    assert code == 1 and set(rows) == {"attention", "lora"}
    assert rows["attention"] == ("failing: test_attention_adds_the_in_proj_adapter: AssertionError: "
                                 "the block ignores in_proj_lora: add its output to the fused projection's"), rows
    assert rows["lora"].startswith("not started: write LoRABranch.forward") and rows["lora"].endswith("; needs exercise 1 too")
    shutil.copy2(ROOT / "clip_min/lora.py", copy / "clip_min/lora.py")
    lora = check(copy, "lora")[1]["lora"]
    assert re.fullmatch(r"waiting: needs exercise 1 first: test_\S+ fails in exercise 1's code before reaching this one's", lora), lora


def test_blank_source_keeps_decorators_docstring_and_comments_above():
    source = '''import torch


# Why this function exists.
@torch.no_grad()
def f(x: int,
      y: int) -> int:
    """Sum."""
    # how
    z = x + y
    return z


class C:
    def g(self):
        return 1
'''
    out = blank_source(source, [("f", "Exercise 9: write f"), ("C.g", "Exercise 9: write C.g")])
    assert out == '''import torch


# Why this function exists.
@torch.no_grad()
def f(x: int,
      y: int) -> int:
    """Sum."""
    raise NotImplementedError("Exercise 9: write f")


class C:
    def g(self):
        raise NotImplementedError("Exercise 9: write C.g")
'''
    with pytest.raises(ExerciseError, match="has no function C.h; the code moved"):
        blank_source(source, [("C.h", "x")])


def test_bad_requests_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    for argv, words in ((["make", str(tmp_path / "full")], "is not an empty folder"),
                        (["make", str(tmp_path / "new"), "--only", "eq99"], "no exercise 'eq99'; choose from"),
                        (["check", "eq1", "eq99"], "no exercise 'eq99'; choose from")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "new").exists()


# ---- the catalogue of wrong answers (clip_min/exercises/mistakes.py) -----------------------------


def test_every_catalogue_entry_applies_exactly_once_and_names_real_tests():
    """Cheap, and over the whole catalogue: each edit still finds its text once, and its tests exist."""
    names = [m.name for m in mistakes.MISTAKES]
    assert len(names) >= 60 and len(set(names)) == len(names)
    assert set(mistakes.CI_SAMPLE) <= set(names)
    for m in mistakes.MISTAKES:
        text = (ROOT / m.file).read_text(encoding="utf-8")
        assert text.count(m.old) == 1, f"{m.name}: {m.file} holds its text {text.count(m.old)} times; update the entry"
        assert m.new != m.old and m.what and "\n" not in m.what and m.tests, m.name
        for test in m.tests:
            path, name = test.split("::")
            assert name.split("[")[0] in defs(ast.parse((ROOT / path).read_text(encoding="utf-8"))), \
                f"{m.name}: {path} has no test {name}"


def run_catalogue(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clip_min.exercises", "mistakes", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def test_a_fixed_sample_of_the_catalogue_is_caught():
    """The whole catalogue is `python -m clip_min.exercises mistakes`; CI runs this sample of it."""
    done = run_catalogue("--only", *mistakes.CI_SAMPLE)
    n = len(mistakes.CI_SAMPLE)
    assert done.returncode == 0 and f"{n} of {n} caught" in done.stdout, done.stdout + done.stderr
    caught = re.findall(r"^caught\s+(\S+):", done.stdout, re.MULTILINE)
    assert sorted(caught) == sorted(mistakes.CI_SAMPLE)


def test_the_catalogue_reports_a_miss_and_an_edit_that_does_not_apply():
    """A harmless edit passes every test, so it is 'missed'; an edit whose text is gone is 'broken'."""
    probe = """
from clip_min.exercises import mistakes
test = ("tests/test_selection.py::test_preference_accuracy_counts_a_tie_as_no_win",)
harmless = mistakes.Mistake("harmless", "clip_min/metrics.py", "as scikit-learn's macro average", "as scikit-learn does", "x", test)
gone = mistakes.Mistake("gone", "clip_min/metrics.py", "text that is not there", "y", "x", test)
print(" ".join(o.status for o in mistakes.run([harmless, gone], progress=lambda line: None)))
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["missed", "broken"], done.stdout + done.stderr


def test_the_teachers_page_lists_the_catalogue():
    page = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    assert mistakes.table() in page, "docs/teaching.md's catalogue is stale: paste python -m clip_min.exercises mistakes --table"
    catalogue = page.split("## The slips to discuss", 1)[1]
    assert f"{len(mistakes.MISTAKES)} wrong answers" in catalogue
    assert f"{len(mistakes.MISTAKES)} of {len(mistakes.MISTAKES)} caught in" in catalogue
