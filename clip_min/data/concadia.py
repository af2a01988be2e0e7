"""Reading Concadia: Wikipedia images, each with an alt-text description and a caption.

The release is a folder with `wiki_split.json` and the images in `resized/`. The JSON is
{"images": [record, ...]}, one record per image:

    {"article_id": "Eiffel Tower", "filename": "1234.jpg", "orig_filename": "File:...",
     "description": {"raw": "...", "tokens": [...]}, "caption": {"raw": ..., "tokens": ...},
     "context": {"raw": ..., "tokens": ...}, "split": "train" | "val" | "test"}

The description is written to replace the image (alt text); the caption to go with it. The
paper trains CLIP so that C(image, description) > C(image, caption) on these pairs.

A bad record (a field missing, a text empty once cleaned, a filename that leaves the image
folder or that the file system refuses, its image absent, no split or one other than train, val
and test) is skipped and counted, so one
broken line of a 97k-record file does not stop a run; the counts are reported to the user.
Whether an image decodes is only known when it is opened, later, so that check is not done
here, but the same counter takes its reason ("undecodable image").
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..files import UnreadableFile, inside, read_json
from ..tokenizer import empty_once_cleaned

SPLITS = ("train", "val", "test")
SPLIT_FILE = "wiki_split.json"
# Concadia's wiki_split.json holds 96,918 records, each with its context paragraph twice (raw and
# tokens): some hundreds of MB. Parsed, JSON takes several times its size in memory, so a file past
# 2 GiB would not fit the machine that trains CLIP on it.
MAX_SPLIT_FILE_BYTES = 2 << 30
IMAGES_SUBDIR = "resized"
# Every reason a record can be skipped for; the order is the order of a tie in summary().
SKIP_REASONS = ("missing field", "empty text", "unsafe filename", "missing image", "undecodable image",
                "no or unknown split")


class DataError(ValueError):
    """The data the user pointed us at cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Example:
    """One usable Concadia image with its two texts."""

    image_path: Path
    description: str  # alt text: written to stand in for the image
    caption: str  # written to accompany the image: names, dates, commentary
    context: str  # the article paragraph around the image ("" if the record has none)
    article_id: str  # Concadia's article title; splits never share an article
    filename: str  # the image's file name inside the images folder, e.g. "1234.jpg"


@dataclass
class SkipCounts:
    """How many records of a split were read, and why the skipped ones were skipped."""

    total: int = 0  # records that belong to the split (usable or not)
    reasons: Counter = field(default_factory=Counter)  # reason -> number of records skipped

    def add(self, reason: str, n: int = 1) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; use one of {SKIP_REASONS}")
        self.reasons[reason] += n

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self) -> str:
        """One line, e.g. "skipped 3 of 120 records: 2 missing image, 1 empty text"."""
        text = f"skipped {self.skipped} of {self.total} records"
        ranked = sorted(
            (reason for reason in SKIP_REASONS if self.reasons[reason]),
            key=lambda reason: (-self.reasons[reason], SKIP_REASONS.index(reason)),
        )
        if ranked:
            text += ": " + ", ".join(f"{self.reasons[reason]} {reason}" for reason in ranked)
        return text


def read_concadia(
    data_dir: str | Path, split: str, images_dir: str | Path | None = None
) -> tuple[list[Example], SkipCounts]:
    """The usable examples of one split, in file order, and the counts of skipped records."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"Concadia folder not found: {data_dir}; pass --data the folder that holds "
            f"{SPLIT_FILE} and {IMAGES_SUBDIR}/"
        )
    split_path = data_dir / SPLIT_FILE
    if images_dir is None:
        images_dir = data_dir / IMAGES_SUBDIR
        if not os.path.lexists(split_path) or not images_dir.is_dir():
            raise DataError(
                f"not a Concadia folder: {data_dir} (expected {SPLIT_FILE} and "
                f"{IMAGES_SUBDIR}/); pass --data the folder of the Concadia release"
            )
    else:
        images_dir = Path(images_dir)
        if not os.path.lexists(split_path):
            raise DataError(
                f"not a Concadia folder: {data_dir} (expected {SPLIT_FILE}); pass --data the "
                f"folder of the Concadia release"
            )
        if not images_dir.is_dir():
            raise DataError(
                f"image folder not found: {images_dir}; pass the folder that holds Concadia's "
                f".jpg files"
            )

    records = _load_records(split_path)
    examples: list[Example] = []
    counts = SkipCounts()
    splits_present: set[str] = set()
    for record in records:
        record_split = record.get("split") if isinstance(record, dict) else None
        if isinstance(record_split, str):
            splits_present.add(record_split)
        if record_split not in SPLITS:
            # Placing it in any split could leak it between them; every split's report counts it.
            counts.total += 1
            counts.add("no or unknown split")
            continue
        if record_split != split:
            continue
        counts.total += 1
        example, reason = _parse_record(record, images_dir)
        if example is None:
            counts.add(reason)
        else:
            examples.append(example)

    if not examples:
        if counts.total == counts.reasons["no or unknown split"]:
            present = ", ".join(sorted(splits_present)) or "none"
            raise DataError(
                f"no records in split {split!r} of {split_path} (splits in the file: "
                f"{present}); choose another split or re-download {SPLIT_FILE}"
            )
        raise DataError(f"no usable records in split {split!r} of {split_path}: {counts.summary()}")
    return examples, counts


def _load_records(split_path: Path) -> list:
    try:
        content = read_json(split_path, MAX_SPLIT_FILE_BYTES, SPLIT_FILE, f"re-download {SPLIT_FILE}")
    except UnreadableFile as err:
        raise DataError(str(err)) from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(
            f'{split_path} has no "images" list; expected Concadia\'s format '
            f'{{"images": [record, ...]}}'
        )
    return content["images"]


def _parse_record(record: object, images_dir: Path) -> tuple[Example | None, str | None]:
    """(example, None) for a usable record, else (None, the reason to skip it)."""
    if not isinstance(record, dict):
        return None, "missing field"
    article_id = record.get("article_id")
    filename = record.get("filename")
    description = _raw_text(record.get("description"))
    caption = _raw_text(record.get("caption"))
    if (
        not isinstance(article_id, (str, int))
        or not isinstance(filename, str)
        or not filename
        or description is None
        or caption is None
    ):
        return None, "missing field"
    if empty_once_cleaned(description) or empty_once_cleaned(caption):
        return None, "empty text"
    image_path = inside(images_dir, filename)
    if image_path is None:
        return None, "unsafe filename"
    if not os.path.isfile(image_path):
        return None, "missing image"
    # The method never reads the context, so a record without one is still usable.
    context = _raw_text(record.get("context")) or ""
    example = Example(
        image_path=image_path,
        description=description.strip(),
        caption=caption.strip(),
        context=context.strip(),
        article_id=str(article_id),
        filename=filename,
    )
    return example, None


def _raw_text(entry: object) -> str | None:
    """The "raw" string of a {"raw", "tokens"} text entry, or None if there is none."""
    if isinstance(entry, dict) and isinstance(entry.get("raw"), str):
        return entry["raw"]
    return None
