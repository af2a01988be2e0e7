"""The numbers the README and docs/ quote from the README's main command are the ones it prints.

The command runs once per session (tests/conftest.py: main_run), as a new user would run it.
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quoted_output(page: Path) -> list[str]:
    """The lines of the page's fenced block that shows the main command's output (it opens with the toy banner)."""
    blocks = [block for block in FENCE.findall(page.read_text(encoding="utf-8"))
              if block.startswith("clip_min: no --weights and --data given")]
    assert len(blocks) == 1, f"{page.name}: expected one block of the main command's output, found {len(blocks)}"
    return blocks[0].rstrip("\n").splitlines()


def test_the_output_the_readme_and_toy_runs_show_is_what_the_command_prints(main_run):
    printed = main_run["stdout"].rstrip("\n").splitlines()
    for page in (ROOT / "README.md", ROOT / "docs" / "toy-runs.md"):
        assert quoted_output(page) == printed, page.name


def test_the_numbers_the_pages_draw_from_it_are_its_own(main_run):
    summary = json.loads((main_run["folder"] / "runs" / "latest" / "summary.json").read_text())
    before, after = summary["concadia_accuracy_before"], summary["concadia_accuracy"]
    transfer, selected, steps = summary["transfer_score"], summary["selected_step"], summary["steps"]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"The base prefers the description for {100 * before:.0f}% of test images" in readme
    assert f"keeps {100 * transfer:.0f}% of its zero-shot F1" in readme
    assert f"Step {selected} is the one Appendix C's trade-off selects" in readme
    assert ("for every test image" in readme) == (after == 1.0)
    toy_runs = " ".join((ROOT / "docs" / "toy-runs.md").read_text(encoding="utf-8").split())
    assert (f"| `python train.py --objective behavioral --lora-rank 64` | {before:.3f} -> {after:.3f} | "
            f"{transfer:.3f} |") in toy_runs
    assert f"the main command selects step {selected} of its {steps}" in toy_runs
    teaching = " ".join((ROOT / "docs" / "teaching.md").read_text(encoding="utf-8").split())
    assert f"trains the toy world from {before:.3f} to {after:.3f} test preference accuracy" in teaching
    toy_world = " ".join((ROOT / "docs" / "10-toy-world.md").read_text(encoding="utf-8").split())
    assert f"`test preference accuracy {before:.3f} -> {after:.3f}`" in toy_world
