"""The Python API (clip_min/api.py): the scripts' computations and errors, from Python."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clip_min
import eval as eval_script
import train
from tiny import one_line_error, run_flags, tiny_world
from clip_min.report.score import CLIPSCORE_PREFIX

TEXTS = ["A red circle on a grey background.", "The Varga medallion at the 1923 Lyon fair.", "Three blue stars."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "api", n_articles=12)


def options(setup, out, **more) -> dict:
    """run_flags' two-step behavioral LoRA run on the tiny world, as fit's keywords."""
    flags = run_flags(setup, out, **more)
    return {flag[2:].replace("-", "_"): value for flag, value in zip(flags[::2], flags[1::2])}


def test_fit_is_train_py(setup, tmp_path, capsys):
    """The same flags through fit and through train.py give the same run: the same pipeline and loop."""
    assert train.main(run_flags(setup, tmp_path / "script", max_steps=4, eval_every=2)) == 0
    script_out = capsys.readouterr().out
    chosen = options(setup, tmp_path / "api", max_steps=4, eval_every=2)
    typed = {name: (int(value) if value.isdigit() else float(value) if name == "lr" else value)
             for name, value in chosen.items()}
    typed["transfer"] = [typed["transfer"]]
    summary = clip_min.fit(**typed)
    api_out = capsys.readouterr().out
    assert api_out.replace(str(tmp_path / "api"), "OUT") == script_out.replace(str(tmp_path / "script"), "OUT")
    script = json.loads((tmp_path / "script" / "summary.json").read_text())
    for key in ("concadia_accuracy", "transfer_f1", "selected_step", "steps"):
        assert summary[key] == script[key]
    records = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("script", "api")]
    assert [json.loads(r)["val_accuracy"] for r in records[0]] == [json.loads(r)["val_accuracy"] for r in records[1]]
    assert clip_min.curves(tmp_path / "api")._repr_png_() == (tmp_path / "api" / "curves.png").read_bytes()

    run = clip_min.load_run(tmp_path / "api")
    # A notebook shows a loaded run as one line naming the run and its step, not its every weight.
    assert repr(run) == f"LoadedRun({tmp_path / 'api'}: behavioral lora, step {summary['selected_step']})"
    assert repr(clip_min.load_run(tmp_path / "api", step="last")).endswith("behavioral lora, step last)")


def test_fit_refuses_what_train_py_refuses_in_one_line(setup, tmp_path, capsys):
    for bad, message in [(dict(lora_rnak=4), "fit: no option 'lora_rnak' (train.py has no --lora-rnak)"),
                         (dict(lora_rank="4"), "fit: lora_rank='4' is not an option value: expected a whole number"),
                         (dict(objective="contrastive"), "fit: objective='contrastive' is not an option value")]:
        with pytest.raises(clip_min.UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            clip_min.fit(**bad)
    # A value train.py reads but refuses: the very line it prints.
    assert train.main(run_flags(setup, tmp_path / "a", lora_rank=0)) == 2
    line = one_line_error(capsys, "train.py")
    with pytest.raises(clip_min.UserError) as error:
        clip_min.fit(**{**options(setup, tmp_path / "b"), "lora_rank": 0, "lr": 0.01, "max_steps": 2, "eval_every": 2})
    assert f"train.py: error: {error.value}" == line
    assert error.value._render_traceback_() == [f"UserError: {error.value}"]  # what Jupyter shows: one line


def test_load_run_errors_are_eval_pys(tmp_path, capsys):
    assert eval_script.main(["concadia", "--run", str(tmp_path / "nowhere")]) == 2
    line = one_line_error(capsys, "eval.py")
    with pytest.raises(clip_min.UserError) as error:
        clip_min.load_run(tmp_path / "nowhere")
    assert f"eval.py: error: {error.value}" == line


def test_score_is_every_image_with_every_text(setup, tmp_path):
    """C and CLIPScore of each (image, text), against the same in float64 from the model's features."""
    run_folder = tmp_path / "run"
    assert train.main(run_flags(setup, run_folder)) == 0
    run = clip_min.load_run(run_folder, step="last", device="cpu")
    red, path = Image.new("RGB", (40, 30), (200, 20, 20)), tmp_path / "blue.png"
    Image.new("RGB", (30, 40), (20, 20, 200)).save(path)
    scores = clip_min.score(run, [red, path], TEXTS)
    assert scores.images == ["image 1", str(path)] and scores.texts == TEXTS
    assert scores.c.shape == scores.clipscore.shape == (2, 3)
    model = run.model
    pixels = torch.stack([clip_min.preprocess(image, model.config.image_resolution) for image in (red, Image.open(path))])
    with torch.no_grad():
        images = model.encode_image(pixels).double()  # (2, D)
        bare = model.encode_text(clip_min.tokenize(TEXTS, model.config.context_length)).double()
        prefixed = model.encode_text(clip_min.tokenize([CLIPSCORE_PREFIX + t for t in TEXTS])).double()
    cosine = F.normalize(images, dim=-1) @ F.normalize(bare, dim=-1).T  # (2, 3): rows images, columns texts
    assert scores.c.double() == pytest.approx(model.logit_scale.double().exp().item() * cosine, abs=1e-4)
    clip = 2.5 * (F.normalize(images, dim=-1) @ F.normalize(prefixed, dim=-1).T).clamp(min=0)
    assert scores.clipscore.double() == pytest.approx(clip, abs=1e-4)
    rows = repr(scores).splitlines()
    assert len(rows) == 7 and rows[2].split()[2:4] == ["image", "1"] and rows[4].split()[2] == str(path)
    with pytest.raises(clip_min.UserError, match="cannot open the image .*missing.png to read it: No such file"):
        clip_min.score(run, tmp_path / "missing.png", TEXTS)
    with pytest.raises(clip_min.UserError, match="texts: '&nbsp; ' is empty once cleaned"):
        clip_min.score(run, red, ["&nbsp; ", "x"])
    with pytest.raises(clip_min.UserError, match="expected a model from clip_min.load_base or clip_min.load_run"):
        clip_min.score(run.model, red, TEXTS)


def test_attribute_labels_texts_and_shares_out_the_score(setup, tmp_path):
    run_folder = tmp_path / "run"
    assert train.main(run_flags(setup, run_folder)) == 0
    run = clip_min.load_run(run_folder, device="cpu")
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 40), (200, 20, 20)).save(image)
    words = clip_min.attribute(run, image, {"description": TEXTS[0], "caption": TEXTS[1]}, steps=64)
    assert words.labels == ["description", "caption"] and words.texts == TEXTS[:2]
    for rows, c, c0 in zip(words.rows, words.c, words.baseline_c):
        ((name, pairs),) = rows  # no rotation, so no mediated row
        assert name == "IG" and sum(value for _, value in pairs) == pytest.approx(c - c0, rel=0.05, abs=0.05)
    assert "description, IG" in words.html() and "caption: C(im, text)" in repr(words)
    assert words.save(tmp_path / "page.html").read_text() == words.html()
    with pytest.raises(clip_min.UserError, match="mediated=True needs the DAS rotation"):
        clip_min.attribute(run, image, TEXTS[0], mediated=True)
    with pytest.raises(clip_min.UserError, match="steps must be at least 2"):
        clip_min.attribute(run, image, TEXTS[0], steps=1)
