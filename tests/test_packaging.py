"""pyproject.toml: the installed commands are train.py's and eval.py's, and a wheel carries what clip_min reads."""

import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from clip_min.cli import eval as eval_cli
from clip_min.cli import train as train_cli

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_dependencies_are_requirements_txt():
    """One list: pyproject.toml reads requirements.txt, whose every line setuptools can read."""
    project, dynamic = PYPROJECT["project"], PYPROJECT["tool"]["setuptools"]["dynamic"]
    assert "dependencies" not in project and "dependencies" in project["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    # setuptools reads plain requirement lines only: an option (-r, -e, --index-url) would break `pip install .`.
    assert requirements and not [line for line in requirements if line.startswith("-")]
    assert "torch==2.13.0" in requirements


@pytest.mark.parametrize("name,module", [("clip-min-train", train_cli), ("clip-min-eval", eval_cli)])
def test_each_installed_command_is_the_scripts_with_its_own_name(name, module, monkeypatch, capsys):
    assert PYPROJECT["project"]["scripts"][name] == f"{module.__name__}:console"
    with pytest.raises(SystemExit):
        module.main(["--help"])
    script_help = capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit):
        module.console()
    command_help = capsys.readouterr().out
    script = "train.py" if module is train_cli else "eval.py"
    assert command_help.startswith(f"usage: {name} ") and script_help.startswith(f"usage: {script} ")
    # The same flags and commands, in the same order.
    options = re.compile(r"(?<![\w-])--?[a-z][\w-]*|\{[^}]*\}")
    assert options.findall(command_help) == options.findall(script_help)
    assert len(options.findall(script_help)) > 20


def test_the_installed_command_names_itself_in_errors(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["clip-min-eval", "score", "--image", "no-such.png", "--text", "a"])
    assert eval_cli.console() == 2
    assert capsys.readouterr().err.strip().startswith("clip-min-eval: error: --image: cannot open the image no-such.png")


def test_every_data_file_of_the_package_is_packaged():
    """A file clip_min reads at run time that is not Python (the toy base) must be in the wheel too."""
    tracked = subprocess.run(["git", "ls-files", "clip_min"], cwd=ROOT, capture_output=True, text=True, check=True)
    data = [Path(p) for p in tracked.stdout.split() if not p.endswith(".py")]
    assert Path("clip_min/train/toy_base.pt") in data
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]
    for path in data:
        package = ".".join(path.parent.parts)
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns.get(package, [])), \
            f"{path} is not in pyproject.toml's package-data: `pip install .` would leave it out"
    assert all(p.startswith("clip_min") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
