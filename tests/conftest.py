"""A fixture shared by the tests that check what the README and the notebook say the toy world prints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAIN_COMMAND = ["train.py", "--objective", "behavioral", "--lora-rank", "64"]  # the README's second command
README_HOME = "/root"  # the README shows its output "with HOME=/root"


@pytest.fixture(scope="session")
def main_run(tmp_path_factory):
    """The README's main command, run as a new user runs it: a fresh HOME (so a fresh cache), its own folder.

    Returns its stdout with that HOME written as the README's, the folder it ran in, and the cache it
    filled (the toy world, the unpacked base, the image features), which later toy-world tests reuse.
    """
    home = tmp_path_factory.mktemp("home")
    folder = tmp_path_factory.mktemp("first_run")
    env = {name: value for name, value in os.environ.items() if name != "CLIP_MIN_CACHE"}
    env["HOME"] = str(home)
    done = subprocess.run([sys.executable, str(ROOT / MAIN_COMMAND[0]), *MAIN_COMMAND[1:]], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(stdout=done.stdout.replace(str(home), README_HOME), folder=folder, cache=home / ".cache" / "clip_min")
