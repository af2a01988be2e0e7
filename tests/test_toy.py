"""clip_min.data.toy: the toy world is deterministic, in Concadia's format, and says what it draws."""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_min.data import toy
from clip_min.data.concadia import read_concadia

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(seed=0, n_articles=12, transfer_per_class=3)
SMALL_CONFIG = toy.ToyConfig(**SMALL)
# Words a caption may never use: they would make it a description.
DESCRIPTIVE_WORDS = set(toy.COLORS) | set(toy.BACKGROUNDS) | set(toy.SHAPES) | set(toy.SHAPE_PLURALS.values())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return toy.make_toy_world(tmp_path_factory.mktemp("a") / "toy", **SMALL)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(world, tmp_path):
    again = toy.make_toy_world(tmp_path / "toy", **SMALL)
    assert file_bytes(again) == file_bytes(world)
    other = toy.make_toy_world(tmp_path / "other", **{**SMALL, "seed": 1})
    split_file = Path(toy.CONCADIA_SUBDIR) / "wiki_split.json"
    assert (other / split_file).read_bytes() != (world / split_file).read_bytes()
    assert (other / toy.CONCADIA_SUBDIR / "resized" / "1.jpg").read_bytes() != (
        world / toy.CONCADIA_SUBDIR / "resized" / "1.jpg"
    ).read_bytes()


WORLD_DIGEST = """
import hashlib, sys, torch
from pathlib import Path
from clip_min.data import toy
from clip_min.images import load_image, preprocess
root = toy.make_toy_world(Path(sys.argv[1]), seed=0, n_articles=12, transfer_per_class=3)
digest = hashlib.sha256()
for path in sorted(p for p in root.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
for path in sorted((root / toy.CONCADIA_SUBDIR / "resized").glob("*.jpg")):  # what the toy base sees
    digest.update(preprocess(load_image(path), 32).numpy().tobytes())
print(torch.get_num_threads(), digest.hexdigest())
"""


def test_same_world_under_one_and_two_threads(tmp_path):
    # The shipped toy base was trained on this world: its records and pixels may not depend on threads.
    printed = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", WORLD_DIGEST, str(tmp_path / threads)], env=env, cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        printed.append(done.stdout.split())
    assert [threads for threads, _ in printed] == ["1", "2"]
    assert printed[0][1] == printed[1][1]


def test_cached_world_is_reused_and_replaced_when_parameters_change(tmp_path):
    root = tmp_path / "toy"
    toy.make_toy_world(root, **SMALL)
    manifest = root / toy.MANIFEST_FILE
    stamp = manifest.stat().st_mtime_ns
    assert toy.make_toy_world(root, **SMALL) == root
    assert manifest.stat().st_mtime_ns == stamp
    toy.make_toy_world(root, **{**SMALL, "n_articles": 5})
    assert json.loads(manifest.read_text())["config"]["n_articles"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folders left behind


def test_refuses_to_overwrite_a_folder_that_is_not_a_toy_world(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no toy world"):
        toy.make_toy_world(tmp_path, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_reads_back_as_concadia_with_disjoint_splits(world):
    planned = toy.plan_toy_world(SMALL_CONFIG)
    articles = {}
    for split in ("train", "val", "test"):
        examples, skips = read_concadia(world / toy.CONCADIA_SUBDIR, split)
        assert skips.skipped == 0
        expected = [image for image in planned if image.split == split]
        assert [e.filename for e in examples] == [image.filename for image in expected]
        assert [e.description for e in examples] == [image.description for image in expected]
        articles[split] = {e.article_id for e in examples}
    assert not articles["train"] & articles["val"]
    assert not articles["train"] & articles["test"]
    assert not articles["val"] & articles["test"]


def test_records_have_the_release_fields(world):
    records = json.loads((world / toy.CONCADIA_SUBDIR / "wiki_split.json").read_text())["images"]
    for record in records:
        assert list(record) == ["article_id", "filename", "orig_filename", "description", "caption", "context", "split"]
        for key in ("description", "caption", "context"):
            assert record[key]["tokens"] == toy.word_tokens(record[key]["raw"])
        assert record["orig_filename"].startswith("File:")
        with Image.open(world / toy.CONCADIA_SUBDIR / "resized" / record["filename"]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))


def test_split_sizes_by_article():
    planned = toy.plan_toy_world(toy.ToyConfig(n_articles=100))
    by_split = {}
    for image in planned:
        by_split.setdefault(image.split, set()).add(image.article_id)
    assert {split: len(ids) for split, ids in by_split.items()} == {"train": 80, "val": 10, "test": 10}


def test_descriptions_say_what_is_drawn():
    for image in toy.plan_toy_world(toy.ToyConfig(n_articles=60)):
        words = toy.word_tokens(image.description)
        assert image.scene.background in words
        main = image.scene.groups[0]
        assert main.color in words and (main.shape if main.count == 1 else toy.SHAPE_PLURALS[main.shape]) in words
        if image.scene.groups[0].size not in words:  # terse alt text: the main group only
            continue
        for group in image.scene.groups:
            assert group.color in words and group.size in words
            shape = group.shape if group.count == 1 else toy.SHAPE_PLURALS[group.shape]
            assert shape in words, image.description
            assert any(phrase in image.description for phrase in toy.POSITION_PHRASES[group.position])


def test_captions_never_describe():
    planned = toy.plan_toy_world(toy.ToyConfig())  # the default size, to see every template and name
    for image in planned:
        assert not DESCRIPTIVE_WORDS & set(toy.word_tokens(image.caption)), image.caption


@pytest.mark.parametrize("grounding", [0.0, 1.0])
def test_caption_grounding_names_the_main_object(grounding):
    for image in toy.plan_toy_world(toy.ToyConfig(n_articles=30, caption_grounding=grounding)):
        nouns = toy.OBJECT_NOUNS[image.scene.groups[0].shape]
        words = toy.word_tokens(image.caption)
        named = any(noun in words or toy.OBJECT_PLURALS.get(noun, noun + "s") in words for noun in nouns)
        assert named == (grounding == 1.0), image.caption


def near(pixels, rgb, distance=45):
    """Number of pixels within `distance` of the colour rgb."""
    return int((np.linalg.norm(pixels.astype(float) - np.array(rgb), axis=-1) < distance).sum())


def test_images_show_the_planned_colours(world):
    for image in toy.plan_toy_world(SMALL_CONFIG)[:20]:
        with Image.open(world / toy.CONCADIA_SUBDIR / "resized" / image.filename) as file:
            pixels = np.asarray(file)  # (64, 64, 3)
        assert near(pixels, toy.BACKGROUNDS[image.scene.background]) > 0.4 * 64 * 64
        for group in image.scene.groups:
            assert near(pixels, toy.COLORS[group.color]) >= 40 * group.count, image.description


def test_transfer_tasks_in_food101_layout(world):
    for task, classes in {"color": toy.COLORS, "background": toy.BACKGROUNDS}.items():
        meta = world / toy.TRANSFER_SUBDIR / task / "meta"
        listed = (meta / "classes.txt").read_text().splitlines()
        assert listed == sorted(classes) and all(name.isalpha() for name in listed)
        entries = (meta / "test.txt").read_text().splitlines()
        assert len(entries) == len(listed) * SMALL["transfer_per_class"]
        for entry in entries:
            label, _ = entry.split("/")
            assert label in listed
            assert (world / toy.TRANSFER_SUBDIR / task / "images" / f"{entry}.jpg").is_file()
    for image in toy.plan_transfer_tasks(SMALL_CONFIG):
        (group,) = image.scene.groups
        shown = {"color": group.color, "background": image.scene.background}[image.task]
        assert shown == image.label and group.count == 1


def test_glasgow_norms_file(world):
    with open(world / toy.NORMS_FILE, newline="") as f:
        rows = list(csv.reader(f))
    header, subheader = rows[0], rows[1]
    assert header[:3] == ["Words", "Length", "AROU"] and header[3:5] == ["", ""]
    imag = header.index("IMAG")
    assert subheader[imag : imag + 3] == ["M", "SD", "N"]
    ratings = {row[0]: float(row[imag]) for row in rows[2:]}
    assert ratings == toy.toy_word_ratings()
    visual = [*toy.SHAPES, *toy.COLORS, "small", "large", "left", "top", "two"]
    caption_words = [w.lower() for w in (*toy.SURNAMES, *toy.CITIES, *toy.EVENTS, "collection", "commissioned")]
    assert min(ratings[w] for w in visual) > 5.5
    assert max(ratings[w] for w in caption_words) < 3.5
    assert all(1 <= value <= 7 for value in ratings.values())


def test_brysbaert_concreteness_file(world):
    """Table 3's second norm: Brysbaert et al.'s layout, its 1..5 scale, following imageability."""
    from clip_min.data.norms import read_brysbaert_concreteness

    lines = (world / toy.CONCRETENESS_FILE).read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["Word", "Bigram", "Conc.M"]
    concreteness = read_brysbaert_concreteness(world / toy.CONCRETENESS_FILE)
    imageability = toy.toy_word_ratings()
    assert set(concreteness) == set(imageability)
    assert all(1 <= value <= 5 for value in concreteness.values())
    for word, value in concreteness.items():  # 1..7 rescaled to 1..5, within the 0.3 of noise
        assert abs(value - (1 + (imageability[word] - 1) * 4 / 6)) <= 0.3 + 0.005, word


def test_word_tokens():
    assert toy.word_tokens("Varga's medallions, 1923.") == ["varga", "'s", "medallions", ",", "1923", "."]


def test_toy_world_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIP_MIN_CACHE", str(tmp_path))
    assert toy.toy_world_dir() == tmp_path / "toy"
    monkeypatch.delenv("CLIP_MIN_CACHE")
    assert toy.toy_world_dir() == Path.home() / ".cache" / "clip_min" / "toy"


def test_default_world_size_and_time(tmp_path):
    start = time.perf_counter()
    root = toy.make_toy_world(tmp_path / "toy")
    seconds = time.perf_counter() - start
    counts = {}
    for split in ("train", "val", "test"):
        examples, _ = read_concadia(root / toy.CONCADIA_SUBDIR, split)
        counts[split] = len(examples)
    print(f"default toy world: {seconds:.1f} s, images per split {counts}")
    assert 2500 <= sum(counts.values()) <= 3500
    assert seconds < 60  # loose: a slow shared CPU should not fail the suite
