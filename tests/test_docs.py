"""docs/ stays true to the code: every link resolves, every named function exists, every equation is covered.

A code reference in docs/ is a markdown link to a .py file followed by the names it points at,

    [`clip_min/losses.py`](../clip_min/losses.py): `behavioral_loss`, `iit_loss`

or a link whose text is the name itself, [`behavioral_loss`](../clip_min/losses.py). Names are
looked up with ``ast`` in the linked file: a module-level function, class or constant, or a
method written ``Class.method``. Names in a file under tests/ must be test functions.
"""
import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# Pages whose links and code references are checked: docs/, and the READMEs outside it that link into it.
LINKED_PAGES = PAGES + [ROOT / "README.md", ROOT / "bench" / "README.md"]
EQUATIONS = range(1, 8)  # the paper's Eqs. 1..7

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
MATH_BLOCK = re.compile(r"\$\$.*?\$\$", re.DOTALL)
LINK = re.compile(r"\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
NAME_IN_TICKS = re.compile(rf"`({IDENT})`")
# What may follow a link to a .py file: an optional colon, then `a`, `b` and `c`.
GAP = r"[ \t]*\n?[ \t]*"  # spaces, and at most one line break: a name may start the next line
NAMES_AFTER = re.compile(rf"\A:?{GAP}`{IDENT}`(?:(?:,{GAP}(?:and{GAP})?|[ \t]+and{GAP}|{GAP}and[ \t]+)`{IDENT}`)*")
HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<text>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
BOLD = re.compile(r"\*\*(?P<text>[^*\n]+)\*\*")


def eq_label(n: int) -> re.Pattern:
    return re.compile(rf"\bEqs?\.[ \t]*{n}(?!\d)")


def blank_out(text: str, pattern: re.Pattern) -> str:
    """``text`` with every match of ``pattern`` replaced by spaces (newlines kept), so offsets stay valid."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


@functools.cache
def prose(page: Path) -> str:
    """The page without fenced code and display math, which may hold brackets that are not links."""
    return blank_out(blank_out(page.read_text(encoding="utf-8"), FENCE), MATH_BLOCK)


@functools.cache
def definitions(path: Path) -> frozenset[str]:
    """Names defined in a Python file: module-level functions, classes and constants, and Class.method."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()

    def visit_class(node: ast.ClassDef, prefix: str) -> None:
        for child in node.body:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                names.add(f"{prefix}.{child.name}")
                visit_class(child, f"{prefix}.{child.name}")

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            visit_class(node, node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def is_test_file(path: Path) -> bool:
    return path.parent == ROOT / "tests"


def collected_tests(path: Path) -> frozenset[str]:
    """The test functions of a test file (methods of Test classes as Class.method)."""
    return frozenset(n for n in definitions(path) if n.rsplit(".", 1)[-1].startswith("test_"))


@functools.cache
def references(page: Path) -> tuple[tuple[int, Path, str], ...]:
    """(offset, file, name) for every code reference on the page; links are checked by test_links_resolve."""
    text = prose(page)
    found = []
    for m in LINK.finditer(text):
        target = m.group("target").split("#", 1)[0]
        if not target.endswith(".py") or re.match(r"[a-z]+:", target):
            continue
        path = (page.parent / target).resolve()
        names = []
        own = re.fullmatch(rf"`({IDENT})`", m.group("text").strip())
        if own and not own.group(1).endswith(".py"):
            names.append(own.group(1))
        after = NAMES_AFTER.match(text[m.end():])
        if after:
            names += NAME_IN_TICKS.findall(after.group(0))
        found += [(m.start(), path, name) for name in names] or [(m.start(), path, "")]
    return tuple(found)


def test_the_pages_are_there():
    names = {p.name for p in PAGES}
    assert "README.md" in names
    assert len([n for n in names if re.match(r"\d\d-.+\.md$", n)]) >= 10, sorted(names)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*$]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found, counts = set(), {}
    for m in HEADING.finditer(blank_out(page.read_text(encoding="utf-8"), FENCE)):
        base = slug(m.group("text"))
        counts[base] = counts.get(base, 0) + 1
        found.add(base if counts[base] == 1 else f"{base}-{counts[base] - 1}")
    return frozenset(found)


def test_anchors_are_githubs():
    page = DOCS / "01-clip-and-the-score.md"
    assert {"the-score", "in-numbers", "exercise-2-the-end-of-text-pooling-and-the-score-c"} <= anchors(page)
    assert "in-numbers-1" in anchors(DOCS / "08-integrated-gradients.md")  # its second "In numbers"
    assert slug("Which descriptions does each model prefer? (EX2 in miniature)") == \
        "which-descriptions-does-each-model-prefer-ex2-in-miniature"


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", LINKED_PAGES, ids=page_id)
def test_links_resolve(page):
    for m in LINK.finditer(prose(page)):
        target = m.group("target")
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        where = f"{page_id(page)}: link [{m.group('text')}]({target})"
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{where} points at a missing file"
        assert path.is_relative_to(ROOT), f"{where} leaves the repository"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{where}: {path.name} has no heading with that anchor"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=page_id)
def test_code_references_name_what_exists(page):
    for _, path, name in references(page):
        if not path.is_file():
            continue  # reported by test_links_resolve
        where = f"{page.name}: {path.relative_to(ROOT)}"
        assert name, f"{where} is linked without naming a function after it: write [`file`](link): `name`"
        if is_test_file(path):
            assert name in collected_tests(path), f"{where} has no test function {name!r}"
        else:
            assert name in definitions(path), f"{where} defines no {name!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_test_names_in_prose_exist(page):
    """A `test_...` named anywhere, not only right after a link, is a test of the last test file linked in its paragraph."""
    test_files = sorted((ROOT / "tests").glob("test_*.py"))
    for paragraph in re.split(r"\n[ \t]*\n", prose(page)):
        last_file = None
        events = [(m.start(), "link", m) for m in LINK.finditer(paragraph)]
        events += [(m.start(), "name", m) for m in re.finditer(r"`(test_[A-Za-z0-9_]+)`", paragraph)]
        for _, kind, m in sorted(events, key=lambda e: e[0]):
            if kind == "link":
                path = (page.parent / m.group("target").split("#", 1)[0]).resolve()
                last_file = path if path.is_file() and is_test_file(path) else last_file
                continue
            name = m.group(1)
            if last_file is not None:
                assert name in collected_tests(last_file), \
                    f"{page.name}: {name} is not a test in {last_file.relative_to(ROOT)}, the file linked before it"
            else:
                assert any(name in collected_tests(f) for f in test_files), f"{page.name}: no test named {name}"


def test_the_index_links_every_page():
    index = prose(DOCS / "README.md")
    linked = {(DOCS / m.group("target").split("#", 1)[0]).resolve() for m in LINK.finditer(index)}
    missing = [p.name for p in PAGES if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


def sections(text: str) -> list[tuple[str, int, int]]:
    """(heading text, start, end) per heading; a section runs to the next heading of its level or above."""
    heads = [(len(m.group("hashes")), m.group("text"), m.start()) for m in HEADING.finditer(text)]
    spans = []
    for i, (level, title, start) in enumerate(heads):
        end = next((s for lv, _, s in heads[i + 1:] if lv <= level), len(text))
        spans.append((title, start, end))
    return spans


def equation_spans(n: int) -> list[tuple[Path, int, int]]:
    """Where Eq. n is treated: sections whose heading names it, or the innermost section around a bold label naming it."""
    label = eq_label(n)
    spans = []
    for page in PAGES:
        raw = page.read_text(encoding="utf-8")
        text = blank_out(raw, FENCE)
        secs = sections(text)
        spans += [(page, start, end) for title, start, end in secs if label.search(title)]
        for bold in BOLD.finditer(text):
            if label.search(bold.group("text")):
                around = [(start, end) for _, start, end in secs if start <= bold.start() < end]
                start, end = min(around, key=lambda s: s[1] - s[0]) if around else (0, len(text))
                spans.append((page, start, end))
    return spans


@pytest.mark.parametrize("n", EQUATIONS)
def test_every_equation_has_a_section_code_and_tests(n):
    spans = equation_spans(n)
    assert spans, f"no docs section names Eq. {n} in a heading or a bold label"
    refs = [(path, name) for page, start, end in spans for offset, path, name in references(page) if start <= offset < end]
    code = [name for path, name in refs if name and path.is_file() and not is_test_file(path)]
    tests = [name for path, name in refs if name and path.is_file() and is_test_file(path)]
    assert any("$$" in page.read_text(encoding="utf-8")[start:end] for page, start, end in spans), \
        f"the Eq. {n} section has no $$ display equation"
    assert code, f"the Eq. {n} section links no code"
    assert tests, f"the Eq. {n} section links no test"
    numbered = re.compile(rf"eq{n}(?!\d)")
    named_so = [t for f in sorted((ROOT / "tests").glob("test_*.py")) for t in collected_tests(f) if numbered.search(t)]
    if named_so:
        assert any(numbered.search(t) for t in tests), \
            f"the Eq. {n} section links tests {tests}, none named after Eq. {n} (e.g. {named_so[0]})"


def package_map() -> dict[str, list[str]]:
    """docs/README.md's map of the package: folder -> the .py files named under it, in the fenced block of "The package".

    A line at the left margin names a folder; an indented line names files, then after two or more
    spaces says what they hold.
    """
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    section = next(text[start:end] for title, start, end in sections(text) if title == "The package")
    block = FENCE.search(section).group(0)
    folders: dict[str, list[str]] = {}
    folder = None
    for line in block.splitlines()[1:-1]:
        if not line.startswith(" "):
            folder = line.split()[0]
            folders[folder] = []
        else:
            names = re.split(r"\s{2,}", line.strip())[0]  # the file names, before the gap to the description
            folders[folder] += [word for word in names.split() if word.endswith(".py")]
    return folders


def test_the_package_map_names_every_module_and_only_those():
    folders = package_map()
    for folder, files in folders.items():
        assert (ROOT / folder).is_dir(), f"docs/README.md's package map names {folder}, which is not there"
        for name in files:
            assert (ROOT / folder / name).is_file(), f"docs/README.md's package map names {folder}{name}, which is not there"
    for folder in ("clip_min/", "clip_min/train/", "clip_min/data/", "clip_min/report/"):
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        missing = sorted(modules - set(folders.get(folder, [])))
        assert not missing, f"docs/README.md's package map leaves out {folder}: {', '.join(missing)}"


def test_file_paths_in_the_readme_exist():
    """README.md names files without links (`clip_min/data/phrases.py`); each must still be there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:clip_min|tests|bench|docs)/[\w./-]*\w\.(?:py|md))\b", text))
    assert named, "README.md names no file: has the pattern gone stale?"
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, f"README.md names files that are not there: {missing}"
