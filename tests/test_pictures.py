"""A picture at every step: a run's curves.png and metrics.csv, Figure 4, attribute.html and prefer.html."""

import csv
import json

import pytest
from PIL import Image

import train
from tiny import run_flags, tiny_world
from clip_min.train.folder import recorded

GREY = (150, 150, 150)  # figures.Panel.step_line


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "pictures", n_articles=12)


def grey_columns(image: Image.Image, box: tuple[int, int, int, int]) -> list[int]:
    """The x of each pixel column inside ``box`` that is grey nearly from top to bottom: a step line (curves cross it)."""
    left, top, right, bottom = box
    pixels = image.load()
    rows = range(top + 2, bottom - 1)
    return [x for x in range(left + 2, right - 1) if sum(pixels[x, y] == GREY for y in rows) > 0.8 * len(rows)]


def test_a_run_leaves_its_curves_and_a_csv_of_its_evaluations(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(run_flags(setup, out, max_steps=6, eval_every=2, lr=0.05)) == 0
    printed = capsys.readouterr().out
    assert (f"wrote {out / 'curves.png'} (accuracy and transfer F1 over training, the selected step marked) "
            f"and {out / 'metrics.csv'}") in printed.splitlines()
    assert {"curves.png", "metrics.csv"} <= set(recorded(out))  # the run's own files, kept by an --overwrite
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["step"]) for row in rows] == [0, 2, 4, 6]
    for row, record in zip(rows, records):
        assert float(row["val_accuracy"]) == record["val_accuracy"]
        assert float(row["test_accuracy"]) == record["test_accuracy"]
        assert float(row["transfer_f1_color"]) == record["transfer_f1"]["color"]
        assert row["loss"] == ("" if record["loss"] is None else str(record["loss"]))
    selected = json.loads((out / "summary.json").read_text())["selected_step"]
    with Image.open(out / "curves.png") as image:
        image = image.convert("RGB")
    # The accuracy panel spans x 70..470 for steps 0..6 * 1.02; its grey line stands at the selected step.
    [line] = grey_columns(image, (70, 100, 470, 400))
    assert abs(line - (70 + 400 * selected / (6 * 1.02))) <= 1, (line, selected)
