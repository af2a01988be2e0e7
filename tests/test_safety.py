"""Hostile files and unlucky runs (issue 11): one test per case, each building its hostile input.

Every test asserts the clear one-line error (exit 2) or the counted skip, and that nothing ran
and nothing was lost. Runs are train.py on a tiny random CLIP and a tiny toy world, as in
tests/test_checkpoint.py.
"""

import errno
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script
import train
from tiny import TINY_OPENAI as TINY, tiny_world, run_flags, JOINT_AT_BLOCK_0, one_line_error
from clip_min.train import checkpoint
from clip_min.train import loop
from clip_min.train.evaluation import load_split
from clip_min.data.concadia import DataError, read_concadia
from clip_min.train.features import encode_images, encode_now
from clip_min.model import CLIP, CLIPConfig
from clip_min.train.runlock import own_run_folder
from clip_min.train.runs import load_run
from clip_min.data.transfer import read_cifar100
from clip_min.weights import WeightsError, load_clip, save_clip

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "safety", n_articles=12)


def flags(setup, out: Path, **options) -> list[str]:
    """train.py's flags for a joint LoRA run on the tiny world; options override them."""
    return run_flags(setup, out, **{**JOINT_AT_BLOCK_0, **options})


@pytest.fixture(scope="module")
def finished(setup):
    """A finished two-step run on its own copy of the base; tests copy the folder before changing it."""
    base = setup["root"] / "run_base.pt"
    shutil.copy(setup["base"], base)
    out = setup["root"] / "finished"
    assert train.main(flags(setup, out, weights=base)) == 0
    return out


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- 1. OpenAI's TorchScript format is read without running its code ----------------------


def traced_archive(model: CLIP, path: Path) -> Path:
    tokens = torch.zeros(1, model.config.context_length, dtype=torch.long)
    tokens[0, :3] = torch.tensor([49406, 320, 49407])
    torch.jit.trace_module(model, {"encode_text": tokens}, check_trace=False).half().save(str(path))
    return path


class RunsCode:
    """Pickles into a call of exec: what a crafted data.pkl can hold."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return exec, (self.source,)


def test_torchscript_archive_is_read_as_data_and_its_code_never_runs(setup, tmp_path, monkeypatch):
    torch.manual_seed(1)
    model = CLIP(TINY)
    expected = {name: t.half().float() for name, t in model.state_dict().items()}
    archive = traced_archive(model, tmp_path / "ViT-tiny.pt")

    def no_jit(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    loaded = load_clip(archive).state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)

    # The same archive with its data.pkl replaced by one that writes a marker file when unpickled.
    marker = tmp_path / "marker"
    payload = pickle.dumps(RunsCode(f"open({str(marker)!r}, 'w').write('ran')"), protocol=2)
    hostile = tmp_path / "ViT-hostile.pt"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(hostile, "w") as target:
        for info in source.infolist():
            target.writestr(info, payload if info.filename.endswith("/data.pkl") else source.read(info))
    with pytest.raises(WeightsError) as refused:
        load_clip(hostile)
    message = str(refused.value)
    assert "\n" not in message and str(hostile) in message and "__builtin__.exec" in message
    assert not marker.exists()
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert marker.read_text() == "ran"


# ---- 2. a Concadia filename cannot leave the image folder ----------------------------------


def test_concadia_filenames_escaping_the_image_folder_are_skipped_and_counted(setup, tmp_path):
    world = tmp_path / "concadia"
    shutil.copytree(setup["world"] / "concadia", world)
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(secret)
    split_file = world / "wiki_split.json"
    content = json.loads(split_file.read_text())
    train_records = [r for r in content["images"] if r["split"] == "train"]
    train_records[0]["filename"] = "../../secret.jpg"
    train_records[1]["filename"] = str(secret)
    split_file.write_text(json.dumps(content))
    examples, skips = read_concadia(world, "train")
    assert skips.reasons["unsafe filename"] == 2
    assert all(e.image_path.resolve() != secret.resolve() for e in examples)
    assert len(examples) == len(train_records) - 2


# ---- 3. one run per run folder -------------------------------------------------------------


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_owner_frees_it(setup, tmp_path, capsys):
    out = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from clip_min.train.runlock import own_run_folder\n"
                               f"with own_run_folder({str(out)!r}):\n    print('owned', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "owned"
        assert train.main(flags(setup, out)) == 2
        line = one_line_error(capsys, "train.py")
        assert str(out) in line and f"pid {owner.pid}" in line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the second run wrote nothing
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()
    with own_run_folder(out):  # the kill left no stale lock
        pass


# ---- 4. temporary files of a run killed mid-write are removed ------------------------------


def test_temp_files_of_a_writer_killed_mid_write_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import time; from clip_min.files import atomic_write\n"
                               f"atomic_write({str(out / 'checkpoint.pt')!r}, "
                               "lambda f: (f.write(bytes(1 << 20)), f.flush(), print('writing', flush=True), time.sleep(60)))"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    leftover = out / f".checkpoint.pt.tmp{writer.pid}"
    assert leftover.stat().st_size == 1 << 20
    with own_run_folder(out):
        assert not leftover.exists()
    assert (out / "config.json").read_text() == "{}"


# ---- 5. --towers both: evaluation sees the vision tower as it is now -------------------------


def test_towers_both_evaluates_with_the_trained_vision_tower(setup, tmp_path, monkeypatch):
    seen = []  # (the split's image paths, the features it was scored with), call by call
    real = loop.split_accuracy

    def recording(model, split, device, autocast):
        seen.append(([e.image_path for e in split.examples], split.image_features.clone()))
        return real(model, split, device, autocast)

    monkeypatch.setattr(loop, "split_accuracy", recording)
    out = tmp_path / "both"
    assert train.main(flags(setup, out, towers="both", objective="behavioral", lr=5e-2)) == 0
    val, _ = read_concadia(setup["world"] / "concadia", "val")
    paths = [e.image_path for e in val]
    on_val = [features for scored, features in seen if scored == paths]
    assert len(on_val) == 2  # the evaluations at step 0 and at step 2
    run = load_run(out, step="last")
    trained, _ = encode_now(run.model, paths)
    base, _ = encode_now(load_clip(setup["base"]), paths)
    assert not torch.allclose(trained, base, atol=1e-3)  # the tower did change
    torch.testing.assert_close(on_val[1], trained, atol=1e-5, rtol=0)
    torch.testing.assert_close(on_val[0], base, atol=1e-5, rtol=0)


# ---- 6. eval.py --run refuses base weights that are not the run's --------------------------


def test_eval_run_refuses_a_replaced_base(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    base = tmp_path / "base.pt"
    shutil.copy(config["weights"], base)
    config["weights"] = str(base)
    (run / "config.json").write_text(json.dumps(config))
    assert eval_script.main(["concadia", "--run", str(run), "--device", "cpu", "--json"]) == 0
    capsys.readouterr()
    stat = base.stat()
    torch.manual_seed(2)
    save_clip(CLIP(TINY), base)  # another model of the very same size...
    os.utime(base, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and modification time
    assert base.stat().st_size == stat.st_size
    assert eval_script.main(["concadia", "--run", str(run), "--device", "cpu"]) == 2
    assert "not the ones it was trained on" in one_line_error(capsys, "eval.py")


# ---- 7. cached features are keyed by the weights' content ----------------------------------


def test_feature_cache_is_keyed_by_the_weights_content(setup, tmp_path, capsys):
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    torch.manual_seed(3)
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    save_clip(CLIP(TINY), a)
    torch.manual_seed(4)
    save_clip(CLIP(TINY), b)

    def score_c(weights: Path) -> float:
        assert eval_script.main(["score", "--weights", str(weights), "--image", str(image), "--text", "a red square",
                                 "--device", "cpu", "--json"]) == 0
        return json.loads(capsys.readouterr().out)["C"]

    score_a, score_b = score_c(a), score_c(b)
    assert score_a != score_b
    stat = a.stat()
    shutil.copyfile(b, a)  # b's bytes under a's path, size and modification time
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert score_c(a) == score_b


# ---- 8. NaN weights, incomplete adapters, CIFAR labels outside the classes -----------------


def test_weights_with_nan_are_refused(setup, tmp_path, capsys):
    state = torch.load(setup["base"], weights_only=True)
    state["ln_final.weight"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    assert eval_script.main(["score", "--weights", str(tmp_path / "nan.pt"), "--image", str(image), "--text", "red",
                             "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no "CLIPScore 0.0000"
    assert "NaN or infinite" in captured.err and "ln_final.weight" in captured.err and "Traceback" not in captured.err


def test_adapters_without_their_lora_tensors_are_refused(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "run")
    adapters = torch.load(run / "adapters.pt", weights_only=True)
    del adapters["lora"]
    torch.save(adapters, run / "adapters.pt")
    assert eval_script.main(["concadia", "--run", str(run), "--step", "last", "--device", "cpu"]) == 2
    assert "no LoRA tensors" in one_line_error(capsys, "eval.py")
    # The selected step's file likewise: one adapter left out would silently stay at its start.
    state = torch.load(run / "selected.pt", weights_only=True)
    del state["trainable"][sorted(state["trainable"])[0]]
    torch.save(state, run / "selected.pt")
    assert eval_script.main(["concadia", "--run", str(run), "--device", "cpu"]) == 2
    assert "LoRA tensors of the model are not in the file" in one_line_error(capsys, "eval.py")


def cifar_folder(folder: Path, labels: list[int], names: list[bytes]) -> Path:
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 255, (len(labels), 3072), dtype=np.uint8)
    (folder / "test").write_bytes(pickle.dumps({b"data": data, b"fine_labels": labels}))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    return folder


def test_cifar_labels_outside_the_class_list_are_refused(tmp_path):
    folder = cifar_folder(tmp_path / "cifar", [0, 1, 7], [b"apple", b"bee"])
    with pytest.raises(DataError, match=r"1 label\(s\) outside the 2 classes"):
        read_cifar100(folder)
    assert read_cifar100(cifar_folder(tmp_path / "good", [0, 1, 1], [b"apple", b"bee"])).labels == [0, 1, 1]


# ---- 9. decompression bombs and absurd aspect ratios ---------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bombs_and_strips_are_a_counted_skip_in_data_and_an_error_for_one_image(setup, tmp_path, capsys):
    bomb, strip = tmp_path / "bomb.png", tmp_path / "strip.png"
    bomb.write_bytes(png_claiming(30000, 30000))
    strip.write_bytes(png_bytes(Image.new("L", (300000, 1))))
    for image in (bomb, strip):
        assert eval_script.main(["score", "--weights", str(setup["base"]), "--image", str(image), "--text", "x",
                                 "--device", "cpu"]) == 2
        assert str(image) in one_line_error(capsys, "eval.py")
        assert eval_script.main(["attribute", "--weights", str(setup["base"]), "--image", str(image), "--text", "x",
                                 "--device", "cpu"]) == 2
        assert str(image) in one_line_error(capsys, "eval.py")

    world = tmp_path / "concadia"
    shutil.copytree(setup["world"] / "concadia", world)
    examples, _ = read_concadia(world, "val")
    shutil.copy(bomb, examples[0].image_path)
    shutil.copy(strip, examples[1].image_path)
    split = load_split(load_clip(setup["base"]), world, None, "val", "bombs", "cpu", None)
    assert "2 undecodable image" in capsys.readouterr().out
    assert len(split.examples) == len(examples) - 2


# ---- 10. operating-system errors, and a damaged feature cache ------------------------------


def test_os_errors_are_one_line(setup, tmp_path, capsys, monkeypatch):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("mine")
    assert train.main(flags(setup, in_the_way)) == 2
    assert str(in_the_way) in one_line_error(capsys, "train.py")
    assert in_the_way.read_text() == "mine"

    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    score = ["score", "--weights", str(setup["base"]), "--image", str(image), "--text", "red", "--device", "cpu"]
    monkeypatch.setenv("CLIP_MIN_CACHE", str(in_the_way))
    assert eval_script.main(score) == 2
    assert "CLIP_MIN_CACHE" in one_line_error(capsys, "eval.py")
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))

    exported = tmp_path / "exported.pt"
    exported.write_bytes(b"the previous export")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    assert eval_script.main(["export", "--weights", str(setup["base"]), "--format", "openai", "--out", str(exported)]) == 2
    assert "free some disk space" in one_line_error(capsys, "eval.py")
    assert exported.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


def test_a_damaged_feature_cache_is_rebuilt_with_a_note(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "blue").save(image)
    model = load_clip(setup["base"])
    features, _ = encode_images(model, [image], "weights")
    (cache_file,) = (tmp_path / "cache" / "features").iterdir()
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    again, ok = encode_images(model, [image], "weights")
    assert "damaged" in capsys.readouterr().out
    assert ok.all() and torch.equal(again, features)


# ---- 11. devices this machine does not have ------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "cdua"])
def test_devices_this_machine_lacks_are_one_line(device, setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert train.main(flags(setup, tmp_path / "run", device=device)) == 2
    assert device in one_line_error(capsys, "train.py")
    assert not (tmp_path / "run").exists()
    assert eval_script.main(["concadia", "--weights", str(setup["base"]), "--device", device]) == 2
    assert device in one_line_error(capsys, "eval.py")


# ---- 12. Ctrl-C, and --resume DIR alone ----------------------------------------------------


def test_ctrl_c_names_the_checkpoint_and_resume_alone_goes_on(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = checkpoint.save

    def save_then_interrupt(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert train.main(flags(setup, out, max_steps=4, eval_every=2)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"train.py: interrupted; the last checkpoint is {out / 'checkpoint.pt'}; "
                                            f"go on with: python train.py --resume {out}")
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert train.main(["--resume", str(out), "--lora-rank", "8"]) == 2  # a flag that disagrees
    assert "--lora-rank was 4, now 8" in one_line_error(capsys, "train.py")
    assert train.main(["--resume", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["resumes"] == 1


# ---- 13. the rest: vocabulary, broken run folders, deep JSON, CIFAR meta, rank ------------


def break_config(run: Path, config) -> None:
    (run / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))


def test_small_vocabulary_broken_runs_deep_json_empty_meta_and_big_rank_are_one_line(setup, finished, tmp_path, capsys):
    small = tmp_path / "small_vocab.pt"
    torch.manual_seed(0)
    save_clip(CLIP(CLIPConfig(**{**TINY.__dict__, "vocab_size": 1000})), small)
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    assert eval_script.main(["score", "--weights", str(small), "--image", str(image), "--text", "red", "--device", "cpu"]) == 2
    assert "tokenizer" in one_line_error(capsys, "eval.py")

    config = json.loads((finished / "config.json").read_text())
    cases = {
        "not an object": lambda run: break_config(run, [1, 2]),
        "missing fields": lambda run: break_config(run, {k: v for k, v in config.items() if k != "lora_rank"}),
        "deep": lambda run: break_config(run, "[" * 100000 + "]" * 100000),
        "adapters a list": lambda run: torch.save([1, 2], run / "adapters.pt"),
        "rotation keys missing": lambda run: torch.save(
            {**torch.load(run / "adapters.pt", weights_only=True), "rotation": {}}, run / "adapters.pt"),
        "selected a list": lambda run: torch.save([1, 2], run / "selected.pt"),
        "selected rotation keys missing": lambda run: torch.save(
            {**torch.load(run / "selected.pt", weights_only=True), "rotation": {}}, run / "selected.pt"),
        "selected with nan": lambda run: torch.save(
            {**(state := torch.load(run / "selected.pt", weights_only=True)),
             "trainable": {k: v * float("nan") for k, v in state["trainable"].items()}}, run / "selected.pt"),
    }
    for name, damage in cases.items():
        run = copy_run(finished, tmp_path / name.replace(" ", "_"))
        damage(run)
        step = "selected" if name.startswith("selected") else "last"
        assert eval_script.main(["concadia", "--run", str(run), "--step", step, "--device", "cpu"]) == 2, name
        assert str(run) in one_line_error(capsys, "eval.py"), name

    world = tmp_path / "deep_concadia"
    world.mkdir()
    (world / "resized").mkdir()
    (world / "wiki_split.json").write_text('{"images": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(DataError, match="nested too deeply"):
        read_concadia(world, "train")
    with pytest.raises(DataError, match="no classes"):
        read_cifar100(cifar_folder(tmp_path / "cifar", [], []))

    assert train.main(flags(setup, tmp_path / "big_rank", lora_rank=65)) == 2
    assert "--lora-rank 65" in one_line_error(capsys, "train.py")
