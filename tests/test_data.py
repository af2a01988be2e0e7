"""clip_min.data.concadia: the Concadia reader, on a small folder in the released format."""
import dataclasses
import json

import pytest
from PIL import Image

from clip_min.data.concadia import DataError, Example, SkipCounts, read_concadia


def text(raw):
    return {"raw": raw, "tokens": raw.lower().split()}


def record(filename, split="train", article="Article A", description="A red circle.",
           caption="The Varga medallion, 1923.", context="Varga was a sculptor."):
    return {
        "article_id": article,
        "filename": filename,
        "orig_filename": f"File:{filename}",
        "description": text(description),
        "caption": text(caption),
        "context": text(context),
        "split": split,
    }


def write_concadia(folder, records, images):
    (folder / "resized").mkdir(parents=True)
    for name in images:
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "resized" / name, format="JPEG")
    (folder / "wiki_split.json").write_text(json.dumps({"images": records}))
    return folder


@pytest.fixture
def concadia(tmp_path):
    no_caption = record("3.jpg")
    del no_caption["caption"]
    no_context = record("8.jpg", article="Article D")
    del no_context["context"]
    records = [
        record("1.jpg", description="  A red circle on the left.  "),
        record("2.jpg"),
        no_caption,
        record("4.jpg", description="   "),
        record("99.jpg"),  # its image is not in resized/
        record("6.jpg", split="val", article="Article B"),
        record("7.jpg", article="Article C"),
        no_context,
    ]
    return write_concadia(tmp_path / "concadia", records, ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "6.jpg", "7.jpg", "8.jpg"])


def test_reads_usable_records_in_file_order(concadia):
    examples, skips = read_concadia(concadia, "train")
    assert [e.filename for e in examples] == ["1.jpg", "2.jpg", "7.jpg", "8.jpg"]
    first = examples[0]
    assert first == Example(
        image_path=concadia / "resized" / "1.jpg",
        description="A red circle on the left.",
        caption="The Varga medallion, 1923.",
        context="Varga was a sculptor.",
        article_id="Article A",
        filename="1.jpg",
    )
    assert examples[3].context == ""  # the context is optional: the method never reads it
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.caption = "changed"


def test_counts_skipped_records_by_reason(concadia):
    _, skips = read_concadia(concadia, "train")
    assert skips.total == 7  # the val record is not part of train
    assert skips.skipped == 3
    assert dict(skips.reasons) == {"missing field": 1, "empty text": 1, "missing image": 1}
    assert skips.summary() == "skipped 3 of 7 records: 1 missing field, 1 empty text, 1 missing image"


def test_other_split(concadia):
    examples, skips = read_concadia(concadia, "val")
    assert [e.filename for e in examples] == ["6.jpg"]
    assert skips.summary() == "skipped 0 of 1 records"


def test_explicit_images_dir(concadia, tmp_path):
    moved = tmp_path / "elsewhere"
    (concadia / "resized").rename(moved)
    examples, _ = read_concadia(concadia, "val", images_dir=moved)
    assert examples[0].image_path == moved / "6.jpg"


def test_skip_counts_summary_ranks_reasons_by_count():
    skips = SkipCounts(total=120)
    skips.add("empty text")
    skips.add("missing image", 2)
    assert skips.summary() == "skipped 3 of 120 records: 2 missing image, 1 empty text"
    skips.add("undecodable image")  # the caller adds these when it opens the images
    assert skips.summary() == "skipped 4 of 120 records: 2 missing image, 1 empty text, 1 undecodable image"
    with pytest.raises(ValueError, match="unknown skip reason"):
        skips.add("cosmic ray")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="Concadia folder not found: .*pass --data"):
        read_concadia(tmp_path / "nowhere", "train")


def test_folder_without_split_file(tmp_path):
    (tmp_path / "resized").mkdir()
    with pytest.raises(DataError, match=r"not a Concadia folder: .*expected wiki_split.json and resized/"):
        read_concadia(tmp_path, "train")


def test_folder_without_images(tmp_path):
    (tmp_path / "wiki_split.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="not a Concadia folder"):
        read_concadia(tmp_path, "train")
    with pytest.raises(DataError, match="image folder not found"):
        read_concadia(tmp_path, "train", images_dir=tmp_path / "missing")


def test_unparseable_json(concadia):
    (concadia / "wiki_split.json").write_text('{"images": [')
    with pytest.raises(DataError, match="wiki_split.json is not valid JSON .*re-download"):
        read_concadia(concadia, "train")


@pytest.mark.parametrize("content", [{"pictures": []}, [1, 2], {"images": {"a": 1}}])
def test_json_without_images_list(concadia, content):
    (concadia / "wiki_split.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match='has no "images" list'):
        read_concadia(concadia, "train")


def test_unknown_split(concadia):
    with pytest.raises(DataError, match="unknown split 'dev'; use one of train, val, test"):
        read_concadia(concadia, "dev")


def test_split_with_no_records(concadia):
    with pytest.raises(DataError, match=r"no records in split 'test' .*splits in the file: train, val"):
        read_concadia(concadia, "test")


def test_split_with_nothing_usable(tmp_path):
    folder = write_concadia(tmp_path / "c", [record("1.jpg"), record("2.jpg", split="val")], ["1.jpg"])
    with pytest.raises(DataError) as info:
        read_concadia(folder, "val")
    assert str(info.value) == (
        f"no usable records in split 'val' of {folder / 'wiki_split.json'}: "
        "skipped 1 of 1 records: 1 missing image"
    )
    assert "\n" not in str(info.value)


def test_a_record_without_a_known_split_is_a_counted_skip_in_no_split(tmp_path):
    no_split = record("3.jpg")
    del no_split["split"]
    records = [record("1.jpg"), record("2.jpg", split="val"), no_split, record("4.jpg", split="dev")]
    folder = write_concadia(tmp_path / "c", records, ["1.jpg", "2.jpg", "3.jpg", "4.jpg"])
    for split, kept in (("train", ["1.jpg"]), ("val", ["2.jpg"])):
        examples, skips = read_concadia(folder, split)
        assert [e.filename for e in examples] == kept  # never 3.jpg or 4.jpg
        assert skips.reasons["no or unknown split"] == 2
        assert skips.summary() == "skipped 2 of 3 records: 2 no or unknown split"
    with pytest.raises(DataError, match=r"no records in split 'test' .*splits in the file: dev, train, val"):
        read_concadia(folder, "test")
