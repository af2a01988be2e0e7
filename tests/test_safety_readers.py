"""Readers (issue 28): every file read whole is a regular file of plausible size, every flag is checked
before the run folder is touched, no reader lets a traceback through, one image opener, one text cleaner.

Each test builds its hostile input. A FIFO read as a file would block forever, so the tests that
make one run under a deadline (SIGALRM), and the one that runs the command line, under a
subprocess timeout: on code without the type check they fail instead of hanging.
"""

import base64
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as eval_script
import train
from tiny import TINY_OPENAI as TINY, tiny_world, run_flags, one_line_error
from clip_min.data.clip_tasks import read_country_names
from clip_min.data.concadia import read_concadia
from clip_min.data.flickr8k import CAPTIONS_FILE, EXPERT_FILE, IMAGES_FOLDER, read_flickr8k_expert
from clip_min.data.norms import read_glasgow_norms
from clip_min.data.phrases import read_pool
from clip_min.data.ratings import BLV_FILE, DIMENSIONS, read_ratings
from clip_min.data.transfer import read_cifar100, read_task
from clip_min.images import ImageLoadError, load_image, preprocess
from clip_min.model import CLIP
from clip_min.report.html import image_data_uri
from clip_min.report.score import read_pairs
from clip_min.report.selection import read_run
from clip_min.train import checkpoint
from clip_min.train.features import encode_images
from clip_min.train.runs import load_run
from clip_min.weights import load_clip, save_clip, save_hf

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    yield from tiny_world(tmp_path_factory, "readers", n_articles=12)


@pytest.fixture(scope="module")
def finished(setup):
    """A finished two-step LoRA run (tests/tiny.py's run_flags); tests copy it before changing it."""
    out = setup["root"] / "finished"
    assert train.main(run_flags(setup, out)) == 0
    return out


class Blocked(BaseException):
    """Raised by the deadline: a BaseException, so that no reader's ``except OSError`` or ``except Exception`` takes it."""


@pytest.fixture
def deadline():
    """Fail, rather than hang, a test whose reader waits on a FIFO: SIGALRM interrupts the blocked open or read."""
    def expire(signum, frame):
        raise Blocked("the reader waited 20 s for a writer")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def listing(folder: Path) -> dict[str, bytes] | None:
    """Every name in ``folder`` (hidden ones too) with its bytes; None if there is no folder."""
    if not folder.exists():
        return None
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- 3. every file read whole: a regular file, of a size its format can have ------------------

# How each kind of hostile path is made, and the words its one-line refusal must hold.
HOSTILE = {
    "fifo": (lambda path: os.mkfifo(path), "FIFO"),
    "device": (lambda path: os.symlink("/dev/zero", path), "character device"),
    "folder": (lambda path: path.mkdir(), "folder"),  # weights may be a folder: a Hugging Face one, which this is not
    "loop": (lambda path: os.symlink(path.name, path), "symbolic link that leads back to itself"),
    # 64 GiB, past every reader's ceiling (the largest, a checkpoint's, is 32 GiB), yet sparse: no disk is used.
    "huge": (lambda path: open(path, "wb").truncate(1 << 36), "more than a"),
}


def make_hostile(path: Path, kind: str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    HOSTILE[kind][0](path)


def cifar(folder: Path) -> Path:
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"fine_labels": [0, 1]}
    for name, content in (("test", batch), ("meta", {b"fine_label_names": [b"apple", b"bear"]})):
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder


def ratings(folder: Path, descriptions: list[str]) -> Path:
    """A behavioral_data/ folder whose BLV file rates each description 4 on every question (img_id 1, 2, ...)."""
    folder.mkdir()
    header = ["context", "img_id", "description", *DIMENSIONS.values()]
    rows = [["c", str(i), text, *["4"] * len(DIMENSIONS)] for i, text in enumerate(descriptions, 1)]
    (folder / BLV_FILE).write_text("".join(",".join(row) + "\n" for row in [header, *rows]))
    return folder


def reader_case(name: str, setup, finished, tmp: Path):
    """(the file to make hostile, the call that reads it) for each reader of a file read whole."""
    world = setup["world"]
    if name == "weights":
        base = shutil.copy(setup["base"], tmp / "base.pt")
        return Path(base), lambda: load_clip(base)
    if name == "hf config.json":
        torch.manual_seed(0)
        folder = save_hf(CLIP(TINY), tmp / "hf")
        return folder / "config.json", lambda: load_clip(folder)
    if name in ("run config", "selected.pt", "adapters.pt", "checkpoint.pt", "metrics.jsonl", "summary.json"):
        run = Path(shutil.copytree(finished, tmp / "run"))
        file = {"run config": "config.json"}.get(name, name)
        call = {"adapters.pt": lambda: load_run(run, step="last"),
                "checkpoint.pt": lambda: checkpoint.read(run, {}, ""),
                "metrics.jsonl": lambda: read_run(run), "summary.json": lambda: read_run(run)}.get(name, lambda: load_run(run))
        return run / file, call
    if name == "a run's recorded base":
        run = Path(shutil.copytree(finished, tmp / "run"))
        config = json.loads((run / "config.json").read_text())
        config["weights"] = str(tmp / "recorded_base.pt")
        (run / "config.json").write_text(json.dumps(config))
        return tmp / "recorded_base.pt", lambda: load_run(run)
    if name == "wiki_split.json":
        data = Path(shutil.copytree(world / "concadia", tmp / "concadia", symlinks=True))
        return data / "wiki_split.json", lambda: read_concadia(data, "train")
    if name == "task list":
        task = Path(shutil.copytree(world / "transfer" / "color", tmp / "color"))
        return task / "meta" / "classes.txt", lambda: read_task(task)
    if name == "CIFAR-100 pickle":
        folder = cifar(tmp / "cifar-100-python")
        return folder / "test", lambda: read_cifar100(folder)
    if name == "ratings CSV":
        folder = ratings(tmp / "behavioral_data", ["a red shape"])
        return folder / BLV_FILE, lambda: read_ratings(folder)
    if name == "norms":
        return tmp / "glasgow.csv", lambda: read_glasgow_norms(tmp / "glasgow.csv")
    if name == "phrase pool":
        return tmp / "phrases.tsv", lambda: read_pool(tmp / "phrases.tsv")
    if name == "score pairs":
        return tmp / "pairs.jsonl", lambda: read_pairs(tmp / "pairs.jsonl")
    if name == "image":
        return tmp / "image.png", lambda: load_image(tmp / "image.png")
    if name == "country table":
        return tmp / "all.csv", lambda: read_country_names(tmp / "all.csv")
    if name in ("Flickr8k captions", "Flickr8k judgements"):
        root = flickr8k(tmp / "flickr8k")
        return root / {"Flickr8k captions": CAPTIONS_FILE, "Flickr8k judgements": EXPERT_FILE}[name], \
            lambda: read_flickr8k_expert(root)
    raise KeyError(name)


def flickr8k(root: Path) -> Path:
    """Flickr8k-Expert as its zips unpack: one image with one caption, judged against another image's caption."""
    (root / IMAGES_FOLDER).mkdir(parents=True)
    for name in ("1.jpg", "2.jpg"):
        Image.new("RGB", (40, 40), "red").save(root / IMAGES_FOLDER / name)
    (root / CAPTIONS_FILE).write_text("1.jpg#0\tA red square .\n2.jpg#0\tA blue circle .\n")
    (root / EXPERT_FILE).write_text("1.jpg\t2.jpg#0\t1\t2\t1\n2.jpg\t1.jpg#0\t2\t1\t1\n")
    return root


READERS = ("weights", "hf config.json", "run config", "selected.pt", "adapters.pt", "checkpoint.pt", "metrics.jsonl",
           "summary.json", "a run's recorded base", "wiki_split.json", "task list", "CIFAR-100 pickle", "ratings CSV",
           "norms", "phrase pool", "score pairs", "image", "country table", "Flickr8k captions", "Flickr8k judgements")


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_what_is_not_a_regular_file_of_plausible_size(reader, kind, setup, finished, tmp_path,
                                                                           deadline):
    target, call = reader_case(reader, setup, finished, tmp_path)
    make_hostile(target, kind)
    with pytest.raises((ValueError, ImageLoadError)) as refused:
        call()
    message = str(refused.value)
    assert "\n" not in message and str(target) in message and HOSTILE[kind][1] in message, message


def test_a_received_run_whose_config_names_a_fifo_base_is_one_line_through_eval_py(finished, setup, tmp_path):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    config["weights"] = str(tmp_path / "base.pt")
    (run / "config.json").write_text(json.dumps(config))
    os.mkfifo(tmp_path / "base.pt")
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    for step in ("selected", "last"):
        done = subprocess.run([sys.executable, str(REPO / "eval.py"), "score", "--run", str(run), "--step", step,
                               "--image", str(image), "--text", "a red square", "--device", "cpu"],
                              capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**os.environ, "CLIP_MIN_CACHE": str(setup["root"] / "cache")})
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("eval.py: error: ") and str(tmp_path / "base.pt") in last and "FIFO" in last, last


def test_a_feature_cache_that_is_not_a_regular_file_is_rebuilt_with_a_note(setup, tmp_path, monkeypatch, capsys, deadline):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path / "cache"))
    model = load_clip(setup["base"])
    paths = sorted((setup["world"] / "concadia" / "resized").iterdir())[:3]
    first, ok = encode_images(model, paths, "base")
    (cache_file,) = (tmp_path / "cache" / "features").iterdir()
    for kind in ("fifo", "huge"):
        make_hostile(cache_file, kind)
        again, ok_again = encode_images(model, paths, "base")
        assert torch.equal(again, first) and torch.equal(ok_again, ok)
        assert "feature cache" in capsys.readouterr().out


# ---- 5. flags: checked against the base and the data, before the run folder is touched --------

def train_records(world: Path) -> int:
    """The toy world's training records, counted from wiki_split.json here, not by the reader under test."""
    records = json.loads((world / "concadia" / "wiki_split.json").read_text())["images"]
    return sum(record["split"] == "train" for record in records)


@pytest.mark.parametrize("bad, words", [
    (dict(lora_dropout=1.5), "--lora-dropout is a probability in [0, 1)"),
    (dict(lora_dropout=1.0), "--lora-dropout is a probability in [0, 1)"),
    (dict(lora_alpha="nan"), "--lora-alpha must be a finite number"),
    (dict(lr="inf"), "--lr must be a finite number"),
    (dict(objective="iit-das", layer=0, intervention_size=32, rotation_lr="nan"), "--rotation-lr must be a finite"),
    (dict(l2="nan"), "--l2 must be a finite number"),
    (dict(joint_alpha="nan"), "--joint-alpha must be a finite number"),
    (dict(seed=-1), "--seed must be in [0, 2**32)"),
    (dict(lora_rank=65), "use at most 64"),  # the tiny text tower is 64 wide
    (dict(objective="iit-das", layer=2, intervention_size=32), "--layer 2: the text tower has blocks 0 to 1"),
    (dict(objective="iit-das", layer=0, intervention_size=65), "k is 1 to the text width 64"),
    (dict(batch_size=10**12), "use at most {train}"),
    (dict(objective="iit-das", layer=0, intervention_size=32, iit_rows="one-way", batch_size=10**12,
          iit_samples=5), "use at most 10"),  # an epoch of 5 triplets is 10 one-way rows
    (dict(objective="iit-das", layer=0, intervention_size=32, triplets="fixed", iit_samples=10**12),
     "use at most {hundred}"),
    (dict(transfer="no-such-folder"), "--transfer no-such-folder: no such folder"),
])
def test_a_refused_flag_leaves_the_run_folder_as_it_was(bad, words, setup, finished, tmp_path, capsys):
    train_n = train_records(setup["world"])
    words = words.format(train=train_n, hundred=max(100 * train_n, 100_000))  # the paper's 100,000 is always allowed
    absent, replaced = tmp_path / "absent", Path(shutil.copytree(finished, tmp_path / "replaced"))
    before = listing(replaced)
    for out, extra in ((absent, []), (replaced, ["--overwrite"])):
        assert train.main(run_flags(setup, out, **bad) + extra) == 2
        assert words in one_line_error(capsys, "train.py")
    assert listing(absent) is None and listing(replaced) == before


def test_the_corrected_command_is_accepted_after_a_refusal(setup, finished, tmp_path, capsys):
    replaced = Path(shutil.copytree(finished, tmp_path / "replaced"))
    assert train.main(run_flags(setup, replaced, lora_dropout=1.5) + ["--overwrite"]) == 2
    capsys.readouterr()
    assert train.main(run_flags(setup, replaced, lora_dropout=0.1) + ["--overwrite"]) == 0
    assert json.loads((replaced / "config.json").read_text())["lora_dropout"] == 0.1


@pytest.mark.parametrize("argv, words", [
    (["--slots", "1000000"], "use at most 3"),  # the pool's 3 phrases
    (["--samples", str(10**12)], "use at most {most}"),
    (["--eval-samples", str(10**12)], "use at most {most}"),
    (["--lr", "inf"], "--lr must be a positive number"),
    (["--kl-weight", "nan"], "--kl-weight a finite one"),
])
def test_prefer_sizes_and_numbers_are_checked_before_they_allocate(argv, words, setup, finished, tmp_path, capsys):
    tasks = [setup["world"] / "transfer" / name for name in ("color", "background")]
    concepts = sum(len([c for c in (task / "meta" / "classes.txt").read_text().splitlines() if c.strip()]) for task in tasks)
    pool = tmp_path / "phrases.tsv"
    pool.write_text("phrase\tkind\tattribute\nred\tvisual\tcolour\nround\tvisual\tshape\nfamous\tnon-visual\tfame\n")
    assert eval_script.main(["prefer", "--run", str(finished), "--task", *map(str, tasks), "--pool", str(pool),
                             "--steps", "1", "--device", "cpu", *argv]) == 2
    assert words.format(most=1_000_000 // concepts) in one_line_error(capsys, "eval.py")


def test_integrated_gradients_points_have_a_ceiling(finished, tmp_path, capsys):
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    assert eval_script.main(["attribute", "--run", str(finished), "--image", str(image), "--text", "a red square",
                             "--steps", str(10**9), "--device", "cpu"]) == 2
    assert "--steps must be 2 (both ends of the path) to 4096" in one_line_error(capsys, "eval.py")


# ---- 6. no traceback from a reader ------------------------------------------------------------

def test_json_nested_too_deeply_is_a_counted_skip_or_one_line(finished, tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000
    pairs = tmp_path / "pairs.jsonl"
    image = tmp_path / "image.png"
    Image.new("RGB", (40, 40), "red").save(image)
    pairs.write_text(deep + "\n" + json.dumps({"image": "image.png", "text": "a red square"}) + "\n")
    rows, skipped = read_pairs(pairs)
    assert rows == [(tmp_path / "image.png", "a red square")] and skipped == {"lines of JSON nested too deeply": 1}
    for name, content in (("metrics.jsonl", deep + "\n"), ("summary.json", deep)):
        run = Path(shutil.copytree(finished, tmp_path / name))
        (run / name).write_text(content)
        assert eval_script.main(["select", "--runs", str(run)]) == 2
        assert str(run / name) in one_line_error(capsys, "eval.py")


def test_a_file_that_is_not_utf8_is_one_line_naming_it(setup, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b'{"image": "a.png", "text": "caf\xe9"}\n')  # Latin-1
    assert eval_script.main(["score", "--weights", str(setup["base"]), "--pairs", str(pairs), "--device", "cpu"]) == 2
    line = one_line_error(capsys, "eval.py")
    assert str(pairs) in line and "not UTF-8 text (byte 31 is 0xe9)" in line


def test_os_errors_name_the_file_and_the_operation(setup, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    for weights, reason in ((tmp_path / "a_file" / "base.pt", "Not a directory"),
                            (tmp_path / ("x" * 300), "File name too long"),
                            (tmp_path / "nothing.pt", "No such file or directory")):
        assert eval_script.main(["score", "--weights", str(weights), "--image", str(tmp_path / "red.png"),
                                 "--text", "x"]) == 2
        line = one_line_error(capsys, "eval.py")
        assert f"cannot open the weights file {weights} to read it: {reason}" in line, line


def loop_at(path: Path) -> Path:
    os.symlink(path.name, path)
    return path


def test_an_image_that_is_a_link_loop_is_a_missing_image_everywhere(setup, tmp_path, capsys):
    data = Path(shutil.copytree(setup["world"] / "concadia", tmp_path / "concadia"))
    records = json.loads((data / "wiki_split.json").read_text())["images"]
    looped = next(r for r in records if r["split"] == "train")["filename"]
    (data / "resized" / looped).unlink()
    loop_at(data / "resized" / looped)
    _, counts = read_concadia(data, "train")
    assert dict(counts.reasons) == {"missing image": 1}
    # A transfer task's list entry: left out as an image that does not decode, not as one leaving the folder.
    task = Path(shutil.copytree(setup["world"] / "transfer" / "color", tmp_path / "color"))
    entry = (task / "meta" / "test.txt").read_text().split()[0]
    (task / "images" / f"{entry}.jpg").unlink()
    loop_at(task / "images" / f"{entry}.jpg")
    read = read_task(task)
    assert not read.skipped and len(read.labels) == len((task / "meta" / "test.txt").read_text().split())
    model = load_clip(setup["base"])
    _, ok = encode_images(model, read.image_paths, "base")
    assert int((~ok).sum()) == 1
    # A --pairs row: counted with the images that are missing or do not decode.
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    loop_at(tmp_path / "loop.png")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"image": name, "text": "a red square"}) + "\n" for name in ("red.png", "loop.png")))
    assert eval_script.main(["score", "--weights", str(setup["base"]), "--pairs", str(pairs), "--device", "cpu"]) == 0
    assert "left out: 1 rows whose image is missing or does not decode" in capsys.readouterr().err


def test_the_release_evaluations_count_a_link_that_loops_as_an_image_and_a_caption_empty_once_cleaned(
        setup, tmp_path, capsys):
    # Flickr8k-Expert: the pair is left out, counted with the missing images; an empty caption, counted too.
    root = flickr8k(tmp_path / "flickr8k")
    (root / IMAGES_FOLDER / "2.jpg").unlink()
    loop_at(root / IMAGES_FOLDER / "2.jpg")
    (root / CAPTIONS_FILE).write_text("1.jpg#0\tA red square .\n2.jpg#0\tA blue circle .\n2.jpg#1\t&nbsp;\n")
    (root / EXPERT_FILE).write_text("1.jpg\t2.jpg#0\t1\t2\t1\n2.jpg\t1.jpg#0\t2\t1\t1\n1.jpg\t2.jpg#1\t1\t1\t1\n")
    data = read_flickr8k_expert(root)
    assert [(pair.image.name, pair.caption) for pair in data.pairs] == [("1.jpg", "A blue circle .")]
    assert dict(data.skipped) == {f"pairs whose image is missing from {root / IMAGES_FOLDER}": 1,
                                  "pairs whose caption is empty once cleaned": 1}
    # Rendered SST2 and Country211 (the same class-folder reader): the image is one that does not decode.
    sst2 = tmp_path / "rendered-sst2"
    for name in ("negative", "positive"):
        (sst2 / "test" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), "red").save(sst2 / "test" / name / "0.png")
    loop_at(sst2 / "test" / "positive" / "1.png")
    assert eval_script.main(["sst2", "--weights", str(setup["base"]), "--data", str(sst2), "--device", "cpu",
                             "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["images"] == 2 and "1 of 3 images did not decode and are left out" in printed.err


def doubled(path: Path, entry_suffix: str, payload: bytes) -> Path:
    """Append a second entry of the name ending in ``entry_suffix`` to the zip at ``path``."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(entry_suffix))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr(name, payload)
    return path


def test_a_zip_that_names_an_entry_twice_is_refused_by_every_reader(setup, finished, tmp_path):
    other = io.BytesIO()
    torch.save({"not": torch.zeros(1)}, other)
    with zipfile.ZipFile(other) as z:
        payload = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    weights = doubled(Path(shutil.copy(setup["base"], tmp_path / "base.pt")), "data.pkl", payload)
    with pytest.raises(ValueError, match="data.pkl twice"):
        load_clip(weights)
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    doubled(run / "selected.pt", "data.pkl", payload)
    with pytest.raises(ValueError, match="data.pkl twice"):
        load_run(run)


@pytest.mark.parametrize("key, shape, words", [
    ("visual.positional_embedding", (0, 64), "has 0 rows, not 1 + a square number of patches"),
    ("visual.positional_embedding", (3, 64), "has 3 rows, not 1 + a square number of patches"),
    ("visual.conv1.weight", (64, 3, 0, 0), "image_resolution 0"),
    ("positional_embedding", (0, 64), "context_length 0"),
    ("text_projection", (64, 0), "embed_dim 0"),
])
def test_a_state_dict_with_an_empty_or_odd_size_is_one_line(key, shape, words, tmp_path, capsys):
    torch.manual_seed(0)
    state = CLIP(TINY).state_dict()
    state[key] = torch.zeros(shape)
    torch.save(state, tmp_path / "odd.pt")
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    assert eval_script.main(["score", "--weights", str(tmp_path / "odd.pt"), "--image", str(tmp_path / "red.png"),
                             "--text", "x"]) == 2
    assert words in one_line_error(capsys, "eval.py")


# ---- 7. one image opener, one text cleaner ---------------------------------------------------

def test_the_pages_scale_sixteen_bit_and_float_images_as_the_model_input_is(tmp_path):
    for mode, value in (("I;16", 32768), ("F", 0.5)):
        path = tmp_path / f"{mode.replace(';', '')}.tif"
        image = Image.fromarray(np.full((8, 8), value, dtype=np.uint16 if mode == "I;16" else np.float32))
        assert image.mode == mode
        image.save(path)
        page_pixel = np.asarray(Image.open(io.BytesIO(base64.b64decode(image_data_uri(path).split(",", 1)[1]))))
        # Mid-grey in either scale is 127.5 of 255; PIL's own conversion would clip to 255 or 0.
        assert np.abs(page_pixel.astype(int) - 128).max() <= 2, (mode, page_pixel[0, 0])
        model_input = preprocess(load_image(path), 8) * torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
        model_input = model_input + torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
        assert torch.allclose(model_input, torch.full_like(model_input, 128 / 255), atol=1e-6), mode


@pytest.mark.parametrize("text", ["", " ", "&nbsp;", "&amp;nbsp;", "\t&#160;\n"])
def test_score_refuses_a_text_that_is_empty_once_cleaned_and_counts_such_rows(text, setup, tmp_path, capsys):
    Image.new("RGB", (40, 40), "red").save(tmp_path / "red.png")
    assert eval_script.main(["score", "--weights", str(setup["base"]), "--image", str(tmp_path / "red.png"),
                             "--text", text, "--device", "cpu"]) == 2
    assert "is empty once cleaned" in one_line_error(capsys, "eval.py")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"image": "red.png", "text": t}) + "\n" for t in (text, "a red square")))
    rows, skipped = read_pairs(pairs)
    assert [t for _, t in rows] == ["a red square"] and sum(skipped.values()) == 1


def test_rated_descriptions_and_pool_phrases_use_the_same_cleaner(tmp_path):
    read = read_ratings(ratings(tmp_path / "behavioral_data", ["&nbsp;", "a red shape"]))
    assert {key[1] for means in read.means.values() for key in means} == {"2"}
    assert sum(read.skipped.values()) == 1
    pool = tmp_path / "phrases.tsv"
    pool.write_text("phrase\tkind\tattribute\na red shape\tvisual\tcolour\n&nbsp;\tvisual\tcolour\n")
    with pytest.raises(ValueError, match="phrases.tsv:3: .*not only entities such as &nbsp;"):
        read_pool(pool)
