"""Files checked where they enter (issue 19): paths that cannot leave their folder, archives,
types at the door, the identity of weights, data and features, and records that are skipped.

Each test builds its hostile input and checks the one-line error (exit 2) or the counted skip,
that nothing outside the folder was read, and that nothing of a run folder was lost.
"""

import collections
import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script
import train
from tiny import TINY_OPENAI as TINY, tiny_world, run_flags, one_line_error
from clip_min import torchscript
from clip_min.data.concadia import DataError, read_concadia
from clip_min.data.ratings import read_ratings
from clip_min.data.transfer import read_cifar100, read_task
from clip_min.images import load_image, preprocess
from clip_min.model import CLIP
from clip_min.train.features import encode_images
from clip_min.weights import load_clip, load_weights, save_clip, save_hf

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "files", n_articles=12)


flags = run_flags  # a two-step behavioral LoRA run on the tiny world (tests/tiny.py)


@pytest.fixture(scope="module")
def finished(setup):
    out = setup["root"] / "finished"
    assert train.main(flags(setup, out)) == 0
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_world(setup, to: Path) -> Path:
    shutil.copytree(setup["world"] / "concadia", to)
    return to


def edit_records(world: Path, change) -> None:
    split_file = world / "wiki_split.json"
    content = json.loads(split_file.read_text())
    change([r for r in content["images"] if r["split"] == "train"])
    split_file.write_text(json.dumps(content))


# ---- 2. paths: one helper, the real path, inside the folder ----------------------------------


def test_symlinks_out_of_the_image_folder_are_unsafe_and_those_inside_are_kept(setup, tmp_path):
    world = copy_world(setup, tmp_path / "concadia")
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "secret.jpg")
    images = world / "resized"
    (images / "evil.jpg").symlink_to(outside / "secret.jpg")  # a file pointing out
    (images / "sub").symlink_to(outside)  # a folder pointing out
    names = sorted(p.name for p in images.iterdir() if p.suffix == ".png" or p.suffix == ".jpg")
    (images / "alias.png").symlink_to(images / names[0])  # a link that stays inside is fine

    def change(records):
        records[0]["filename"], records[1]["filename"] = "evil.jpg", "sub/secret.jpg"
        records[2]["filename"] = "alias.png"

    edit_records(world, change)
    examples, skips = read_concadia(world, "train")
    assert skips.reasons["unsafe filename"] == 2
    assert any(e.filename == "alias.png" for e in examples)
    assert all(outside.resolve() not in e.image_path.resolve().parents for e in examples)


def test_transfer_lists_and_class_folders_cannot_reach_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "secret.jpg")
    food = tmp_path / "food"
    (food / "meta").mkdir(parents=True)
    (food / "images" / "apple").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(food / "images" / "apple" / "1.jpg")
    (food / "images" / "apple" / "2.jpg").symlink_to(outside / "secret.jpg")
    (food / "meta" / "classes.txt").write_text("apple\n")
    (food / "meta" / "test.txt").write_text("apple/1\napple/2\napple/../../../outside/secret\n")
    task = read_task(food)
    assert task.skipped["unsafe path"] == 2 and task.image_paths == [food / "images" / "apple" / "1.jpg"]

    imagenet = tmp_path / "imagenet"
    (imagenet / "n00000001").mkdir(parents=True)
    (imagenet / "LOC_synset_mapping.txt").write_text("n00000001 tench, Tinca tinca\n")
    Image.new("RGB", (8, 8)).save(imagenet / "n00000001" / "a.JPEG")
    (imagenet / "n00000001" / "b.JPEG").symlink_to(outside / "secret.jpg")
    task = read_task(imagenet)
    assert task.skipped["unsafe path"] == 1 and [p.name for p in task.image_paths] == ["a.JPEG"]


def test_score_pairs_and_rated_images_cannot_reach_outside(setup, tmp_path, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    Image.new("RGB", (40, 40), "red").save(folder / "good.png")
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "secret.png")
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    with open(folder / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "text"], ["good.png", "red"], ["../secret.png", "blue"],
                                 ["link.png", "blue"], [str(tmp_path / "secret.png"), "blue"]])
    assert eval_script.main(["score", "--weights", str(setup["base"]), "--pairs", str(folder / "pairs.csv"),
                             "--device", "cpu", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(folder / "good.png")]
    assert "left out: 3 rows whose image is an unsafe path" in err

    ratings = tmp_path / "behavioral_data"
    (ratings / "images").mkdir(parents=True)
    (ratings / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    rows, files = [], []
    for i, file in enumerate(["a.png", "b.png", "c.png", "../../secret.png", "link.png"]):
        if "/" not in file and file != "link.png":
            Image.new("RGB", (40, 40), (50 * i, 0, 0)).save(ratings / "images" / file)
        files.append(dict(img_id=f"i{i}", img_file=file))
        rows += [dict(context="c", img_id=f"i{i}", description=f"a picture number {i}", q_overall=i % 3 + 1,
                      q_reconstructivity=2, q_relevance=3, q_irrelevance=1)]
    for name, table in (("blv_data_criticaltrials.csv", rows), ("all_descriptions.csv", files)):
        with open(ratings / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    assert eval_script.main(["blv", "--weights", str(setup["base"]), "--ratings", str(ratings), "--json",
                             "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["descriptions_scored"] == 3
    assert result["skipped"]["descriptions whose img_file is an unsafe path (it leaves the image folder)"] == 2


# ---- 3. archives -------------------------------------------------------------------------------


class Storage:
    def __init__(self, key: str, values: torch.Tensor):
        self.key, self.values = key, values


class View:
    """Pickles as torch's _rebuild_tensor_v2(storage, offset, size, stride, ...), as TorchScript writes a tensor."""

    def __init__(self, storage: Storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class ArchivePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", torch.HalfStorage, obj.key, "cpu", obj.values.numel())
        return None


def archive(path: Path, tensors: dict, monkeypatch, compress=zipfile.ZIP_STORED, twice: str | None = None) -> Path:
    """A TorchScript-layout zip whose data.pkl is a module record holding ``tensors`` (Views)."""
    fake = types.ModuleType("__torch__")
    record = type("Model", (), {"__module__": "__torch__"})
    fake.Model = record
    monkeypatch.setitem(sys.modules, "__torch__", fake)
    root = record()
    root.__dict__.update(tensors)
    buffer = io.BytesIO()
    ArchivePickler(buffer, protocol=2).dump(root)
    storages = {view.args[0].key: view.args[0] for view in tensors.values()}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue(), compress_type=compress)
        for key, storage in storages.items():
            z.writestr(f"archive/data/{key}", storage.values.numpy().tobytes())
        z.writestr("archive/code/__torch__.py", "def forward(self): pass\n")
        if twice:
            z.writestr(twice, b"again")
    return path


def test_views_at_offsets_into_a_shared_storage_load_the_right_values_and_own_their_memory(tmp_path, monkeypatch):
    storage = Storage("0", torch.arange(12, dtype=torch.float16))
    path = archive(tmp_path / "a.pt", {"a": View(storage, 0, (2, 3), (3, 1)),  # elements 0..5
                                       "b": View(storage, 6, (3, 2), (1, 3))}, monkeypatch)  # 6..11, transposed
    state = torchscript.read_state_dict(path)
    assert state["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert state["b"].tolist() == [[6, 9], [7, 10], [8, 11]]
    # Each owns just its own elements: not the storage, not the other's.
    assert state["a"].untyped_storage().nbytes() == 6 * 2 and state["b"].untyped_storage().nbytes() == 6 * 2
    state["a"].zero_()
    assert state["b"].tolist() == [[6, 9], [7, 10], [8, 11]]


@pytest.mark.parametrize("offset, size, stride, refused", [
    (0, (4,), (0,), "not a plain dense view"),  # one number standing for four
    (0, (2, 3), (1, 1), "not a plain dense view"),  # rows overlap
    (0, (2,), (2,), "not a plain dense view"),  # skips elements
    (0, (2,), (-1,), "not whole numbers"),
    (-1, (2,), (1,), "not whole numbers"),
    (6, (2, 2), (2, 1), "does not fit in its storage"),  # 4 elements from 6 of 8
    (0, (3,), (True,), "not whole numbers"),
])
def test_views_that_are_not_plain_dense_views_inside_their_storage_are_refused(tmp_path, monkeypatch, offset, size,
                                                                              stride, refused):
    storage = Storage("0", torch.arange(8, dtype=torch.float16))
    path = archive(tmp_path / "a.pt", {"w": View(storage, offset, size, stride)}, monkeypatch)
    with pytest.raises(torchscript.ArchiveError, match=refused):
        torchscript.read_state_dict(path)


def test_compressed_oversized_or_doubled_entries_are_refused_before_inflating(tmp_path, monkeypatch, capsys):
    storage = Storage("0", torch.arange(4, dtype=torch.float16))
    tensors = {"w": View(storage, 0, (4,), (1,))}

    def never(*args, **kwargs):
        raise AssertionError("inflated a compressed data.pkl")

    path = archive(tmp_path / "compressed.pt", tensors, monkeypatch, compress=zipfile.ZIP_DEFLATED)
    monkeypatch.setattr(zlib, "decompressobj", never)
    with pytest.raises(torchscript.ArchiveError, match="is compressed"):
        torchscript.read_state_dict(path)
    monkeypatch.undo()

    path = archive(tmp_path / "big.pt", tensors, monkeypatch)
    monkeypatch.setattr(torchscript, "MAX_PICKLE_BYTES", 16)
    with pytest.raises(torchscript.ArchiveError, match="at most 16 bytes"):
        torchscript.read_state_dict(path)
    monkeypatch.undo()

    with pytest.warns(UserWarning, match="Duplicate name"):
        path = archive(tmp_path / "twice.pt", tensors, monkeypatch, twice="archive/data/0")
    with pytest.raises(torchscript.ArchiveError, match="archive/data/0 twice"):
        torchscript.read_state_dict(path)
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40)).save(image)
    assert eval_script.main(["score", "--weights", str(path), "--image", str(image), "--text", "x", "--device", "cpu"]) == 2
    assert "twice" in one_line_error(capsys, "eval.py")


# ---- 4. types at the door ---------------------------------------------------------------------


def test_wrong_types_in_weights_and_hf_configs_are_one_line_through_eval_py(setup, tmp_path):
    state = torch.load(setup["base"], weights_only=True)
    cases = {}
    torch.save({**state, 7: torch.zeros(1)}, cases.setdefault("int key", tmp_path / "int_key.pt"))
    torch.save({**state, "ln_final.weight": state["ln_final.weight"].long()}, cases.setdefault("ints", tmp_path / "ints.pt"))
    hf = save_hf(load_clip(setup["base"]), tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    for name, value in (("text_config", [1, 2]), ("vision_config", "big")):
        folder = cases.setdefault(name, tmp_path / name)
        shutil.copytree(hf, folder)
        (folder / "config.json").write_text(json.dumps({**config, name: value}))
    heads = cases.setdefault("heads", tmp_path / "heads")
    shutil.copytree(hf, heads)
    (heads / "config.json").write_text(json.dumps({**config, "text_config": {**config["text_config"],
                                                                              "num_attention_heads": True}}))
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40)).save(image)
    script = ("import sys, eval\nfor w in sys.argv[1:]:\n"
              f"    print(eval.main(['score', '--weights', w, '--image', {str(image)!r}, '--text', 'x', '--device', 'cpu']))")
    done = subprocess.run([sys.executable, "-c", script, *map(str, cases.values())], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "CLIP_MIN_CACHE": str(tmp_path / "cache")})
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stdout.split() == ["2"] * len(cases)
    errors = [line for line in done.stderr.splitlines() if line.startswith("eval.py: error:")]
    assert len(errors) == len(cases)
    for (name, path), line in zip(cases.items(), errors):
        assert str(path) in line, (name, line)
    assert "not names" in errors[0] and "not floating point" in errors[1]
    assert "text_config is a JSON list" in errors[2] and "vision_config is a JSON str" in errors[3]
    assert "num_attention_heads" in errors[4]


def test_a_run_config_with_wrong_types_is_one_line_naming_the_field(setup, finished, tmp_path, capsys):
    config = json.loads((finished / "config.json").read_text())
    for name, value in (("lora_rank", "four"), ("objective", 5), ("towers", "sideways"), ("transfer", "color"),
                        ("layer", 1.5), ("lora_dropout", None), ("weights_id", 3)):
        run = tmp_path / name
        shutil.copytree(finished, run)
        (run / "config.json").write_text(json.dumps({**config, name: value}))
        before = sha(run / "checkpoint.pt")
        assert eval_script.main(["concadia", "--run", str(run), "--device", "cpu"]) == 2, name
        line = one_line_error(capsys, "eval.py")
        assert f"field {name} is" in line and str(run / "config.json") in line, line
        assert train.main(["--resume", str(run)]) == 2, name
        assert f"field {name} is" in one_line_error(capsys, "train.py")
        assert sha(run / "checkpoint.pt") == before


def cifar(folder: Path, batch: dict, meta: dict) -> Path:
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder


def test_cifar_fields_of_the_wrong_type_name_the_file_and_field(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    good_meta = {b"fine_label_names": [b"apple", b"bee"]}
    cases = [
        ({b"data": data, b"fine_labels": 5}, good_meta, "b'fine_labels' is a int"),
        ({b"data": data, b"fine_labels": [0, True]}, good_meta, "outside the 2 classes"),
        ({b"data": data, b"fine_labels": [0, 1]}, {b"fine_label_names": b"apple"}, "b'fine_label_names' is not a list"),
        ({b"data": data, b"fine_labels": [0, 1]}, {b"fine_label_names": [b"apple", b"apple"]}, "listed twice"),
        ({b"data": np.zeros((0, 3072), dtype=np.uint8), b"fine_labels": []}, good_meta, "no images"),
        ({b"data": np.array([[1]], dtype=object), b"fine_labels": [0]}, good_meta, "objects"),
    ]
    for i, (batch, meta, message) in enumerate(cases):
        with pytest.raises(DataError, match=message):
            read_cifar100(cifar(tmp_path / str(i), batch, meta))


def test_rating_csvs_with_ragged_rows_are_counted_not_a_crash(tmp_path):
    folder = tmp_path / "behavioral_data"
    folder.mkdir()
    header = "context,img_id,description,q_overall,q_reconstructivity,q_relevance,q_irrelevance"
    rows = ["c,i1,a red square,3,2,4,1", "c,i1,a red square,5,2,4,1,extra,cells", "c,i2,a blue circle",
            "c,i2,a blue circle,four,2,4,1", ",,,1,1,1,1"]
    (folder / "blv_data_criticaltrials.csv").write_text("\n".join([header, *rows]) + "\n")
    ratings = read_ratings(folder)
    overall = ratings.means["overall", "BLV"]
    assert overall[("c", "i1", "a red square")] == 4.0 and ("c", "i2", "a blue circle") not in overall
    assert ratings.skipped["BLV overall ratings missing or not a number"] == 2
    assert ratings.skipped["rows of blv_data_criticaltrials.csv without img_id or description"] == 1


# ---- 5. identity -------------------------------------------------------------------------------


def test_the_weights_fingerprint_is_of_the_bytes_that_were_loaded(setup, tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    shutil.copy(setup["base"], path)
    original = path.read_bytes()
    torch.manual_seed(5)
    save_clip(CLIP(TINY), tmp_path / "other.pt")
    real_load = torch.load

    def replaced_while_loading(*args, **kwargs):
        shutil.copyfile(tmp_path / "other.pt", path)  # the file changes under the loader
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", replaced_while_loading)
    model, weights_id = load_weights(path)
    monkeypatch.undo()
    assert weights_id == "sha256:" + hashlib.sha256(original).hexdigest()
    expected = load_clip(setup["base"]).state_dict()
    assert all(torch.equal(t, expected[name]) for name, t in model.state_dict().items())


def test_a_resume_on_other_data_of_the_same_size_is_refused_and_unusable_records_are_skips(setup, tmp_path, capsys):
    world = copy_world(setup, tmp_path / "concadia")
    n_train = len(read_concadia(world, "train")[0])
    split_file = world / "wiki_split.json"
    content = json.loads(split_file.read_text())
    template = next(r for r in content["images"] if r["split"] == "train")
    content["images"] += [{**template, "filename": name} for name in ("a\0b.png", "x" * 300 + ".png", 12, "/etc/passwd")]
    content["images"].append({**template, "description": {"raw": " &amp;nbsp; \u0000"}})  # nothing once cleaned
    split_file.write_text(json.dumps(content))
    examples, skips = read_concadia(world, "train")
    assert len(examples) == n_train
    assert (skips.reasons["unsafe filename"], skips.reasons["missing field"], skips.reasons["empty text"]) == (3, 1, 1)

    run = tmp_path / "run"
    assert train.main(flags(setup, run, data=world)) == 0  # the hostile records are skipped, the run goes on
    assert "skipped 5 of" in capsys.readouterr().out
    before = sha(run / "checkpoint.pt")
    images = sorted(e.image_path for e in examples)
    saved = images[0].read_bytes()
    shutil.copyfile(images[1], images[0])  # same number of records, another picture
    assert train.main(["--resume", str(run), "--max-steps", "4"]) == 2
    assert "not the one the run started with" in one_line_error(capsys, "train.py")
    images[0].write_bytes(saved)
    edit_records(world, lambda records: records[0]["caption"].update(raw="another caption altogether"))
    assert train.main(["--resume", str(run), "--max-steps", "4"]) == 2
    assert "not the one the run started with" in one_line_error(capsys, "train.py")
    assert sha(run / "checkpoint.pt") == before


def test_cached_features_follow_an_image_replaced_with_the_same_size_and_mtime(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))
    model = load_clip(setup["base"])
    rng = np.random.default_rng(0)
    image, other = tmp_path / "image.bmp", tmp_path / "other.bmp"
    for path in (image, other):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    first, _ = encode_images(model, [image], "weights")
    expected, _ = encode_images(model, [other], "weights")
    stat = image.stat()
    shutil.copyfile(other, image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size and image.stat().st_mtime_ns == stat.st_mtime_ns
    again, _ = encode_images(model, [image], "weights")
    assert not torch.equal(first, expected) and torch.equal(again, expected)


def test_selected_and_adapters_holding_tensors_the_run_does_not_train_are_refused(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = torch.load(run / "selected.pt", weights_only=True)
    state["trainable"]["ln_final.weight"] = torch.zeros(TINY.text_width)  # a base weight, silently replaced
    torch.save(state, run / "selected.pt")
    assert eval_script.main(["concadia", "--run", str(run), "--device", "cpu"]) == 2
    assert "parameters the run does not train (e.g. ln_final.weight)" in one_line_error(capsys, "eval.py")
    adapters = torch.load(run / "adapters.pt", weights_only=True)
    torch.save({**adapters, "visual": {"conv1.weight": torch.zeros(1)}}, run / "adapters.pt")
    assert eval_script.main(["concadia", "--run", str(run), "--step", "last", "--device", "cpu"]) == 2
    assert "holds 'visual' besides 'lora' and 'rotation'" in one_line_error(capsys, "eval.py")


def test_duplicate_classes_and_tasks_without_images_are_errors(setup, tmp_path, capsys):
    food = tmp_path / "food"
    shutil.copytree(setup["world"] / "transfer" / "color", food)
    classes = (food / "meta" / "classes.txt").read_text().split()
    (food / "meta" / "classes.txt").write_text("\n".join(classes + classes[:1]) + "\n")
    assert train.main(flags(setup, tmp_path / "run", transfer=food)) == 2
    assert f"the class {classes[0]!r} is listed twice" in one_line_error(capsys, "train.py")
    assert not (tmp_path / "run" / "config.json").exists()
    (food / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    (food / "meta" / "test.txt").write_text("\n")
    with pytest.raises(DataError, match="lists no usable image"):
        read_task(food)


# ---- 6. records -------------------------------------------------------------------------------


def test_sixteen_bit_and_float_images_are_scaled_to_eight_bits(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (40, 40)).astype(np.uint8)
    expected = preprocess(Image.fromarray(grey), 32)
    wide = grey.astype(np.uint16) * 257  # 255 -> 65535
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    for image in (load_image(path), Image.fromarray(wide.astype(np.int32)), Image.fromarray(grey / np.float32(255))):
        assert image.mode in ("I;16", "I", "F")
        torch.testing.assert_close(preprocess(image, 32), expected, atol=0, rtol=0)


def test_a_checkpoint_with_a_valid_checksum_but_another_layout_is_one_line(setup, finished, tmp_path, capsys):
    from clip_min.train import checkpoint

    def damaged(change) -> Path:
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        shutil.copytree(finished, run)
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        del state["sha256"]
        change(state)
        state["sha256"] = checkpoint.digest(state)  # a checksum anyone can compute
        torch.save(state, run / "checkpoint.pt")
        return run

    cases = {"not laid out as clip_min writes": lambda s: s.update(run=[1, 2]),
             "not laid out as clip_min": lambda s: s["progress"].update(hacked=1),
             "do not fit this run's model": lambda s: s["trainable"].update(
                 {name + "_renamed": t for name, t in list(s["trainable"].items())[:1]})}
    for message, change in cases.items():
        run = damaged(change)
        before = sha(run / "checkpoint.pt")
        assert train.main(["--resume", str(run), "--max-steps", "4"]) == 2, message
        assert message in one_line_error(capsys, "train.py")
        assert sha(run / "checkpoint.pt") == before
