"""notebooks/walkthrough.ipynb runs top to bottom with plain Python, and prints what its text says it prints.

Its code cells run in order in one namespace, in a folder of their own, with the cache the README's
command filled (tests/conftest.py: main_run). Lines that start with % or ! are Jupyter's (the
install cell) and are left out. A fenced block in a text cell is output: each of its lines must be a
line that the code cells since the text cell before printed. A decimal number in the text must have
been printed by then.
"""

import contextlib
import io
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# A decimal number in the text: it must be one the cells printed (a percentage, such as the paper's 49.4%, need not).
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\d%])")


def python_lines(source: str) -> str:
    """A code cell without Jupyter's own lines (%magic, !shell), which plain Python cannot run."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_the_walkthrough_runs_and_prints_what_its_text_says(main_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(main_run["cache"]))
    monkeypatch.chdir(tmp_path)
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    namespace = {"__name__": "__main__"}
    since_text, everything, checked = "", "", 0
    for number, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {number}: outputs are not stripped"
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(python_lines(source), f"notebook cell {number}", "exec"), namespace)
            since_text += printed.getvalue()
            everything += printed.getvalue()
            continue
        lines = [line.rstrip() for line in since_text.splitlines()]
        for block in FENCE.findall(source):
            for line in block.splitlines():
                assert not line.strip() or line.rstrip() in lines, \
                    f"cell {number} says the cells before it print\n{line}\nbut they printed:\n{since_text}"
                checked += bool(line.strip())
        for value in DECIMAL.findall(FENCE.sub("", source)):
            assert value in everything, f"cell {number} states {value}, which no cell printed"
        since_text = ""
    assert checked > 20  # the text still quotes what the cells print
    assert (tmp_path / "runs" / "behavioral" / "curves.png").is_file() and (tmp_path / "figure4.png").is_file()
