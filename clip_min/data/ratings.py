"""Blind and low-vision (BLV) and sighted raters' judgements of image descriptions (Kreiss et al. 2022a).

The released files of elisakreiss/contextual-description-evaluation (behavioral_data/): one row
per rating, the description keyed by (context, img_id, description). :func:`read_ratings`
averages each description's ratings per question (overall, imaginability, relevance,
irrelevance) and per group of raters, the cells of the paper's Table 2.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .concadia import DataError
from ..files import UnreadableFile, read_text_whole
from ..tokenizer import empty_once_cleaned

BLV_FILE = "blv_data_criticaltrials.csv"
SIGHTED_FILE = "sighted_data_criticaltrials.csv"
DESCRIPTIONS_FILE = "all_descriptions.csv"
DIMENSIONS = {  # the paper's name -> the question's column in the released files
    "overall": "q_overall",
    "imaginability": "q_reconstructivity",
    "relevance": "q_relevance",
    "irrelevance": "q_irrelevance",
}
# Table 2's groups: which file, and which suffix its rating columns carry there. Sighted raters
# answered once before seeing the image (.preimg) and again after (.postimg).
GROUPS = {
    "BLV": (BLV_FILE, ""),
    "sighted, no image": (SIGHTED_FILE, ".preimg"),
    "sighted, with image": (SIGHTED_FILE, ".postimg"),
}
# Sighted raters were asked to imagine the image only before they saw it.
NOT_ASKED = {("imaginability", "sighted, with image")}
KEY_COLUMNS = ("context", "img_id", "description")
# The authors' cosid.py drops the rows of two images before correlating (Kreiss et al.'s analysis
# calls them attention checks), by these stems; ``drop_images`` takes them.
ATTENTION_CHECK_IMAGES = ("guitar", "640px-parc_agen")
SIGHTED_BY = ("key", "text")  # what ties a sighted rating to a BLV-rated description
# Kreiss et al.'s CSV files are a few MB; a score --pairs CSV of a million rows is about 200 MB.
MAX_CSV_BYTES = 1 << 30

Description = tuple[str, str, str]  # (context, img_id, description text with whitespace collapsed)


@dataclass
class Ratings:
    """Mean ratings per description, for every (dimension, group) cell of Table 2."""

    means: dict[tuple[str, str], dict[Description, float]]
    image_files: dict[str, str]  # img_id -> img_file
    skipped: Counter = field(default_factory=Counter)  # reason -> rows (or ratings) left out
    groups: list[str] = field(default_factory=list)  # the groups whose file was found


def rating_columns(group: str) -> dict[str, str]:
    """dimension -> the CSV column holding it for ``group``."""
    suffix = GROUPS[group][1]
    return {dim: column + suffix for dim, column in DIMENSIONS.items() if (dim, group) not in NOT_ASKED}


def ratings_folders(ratings: str | Path, images: str | Path | None) -> tuple[Path, Path]:
    """The behavioral_data/ folder and the rated images' folder, from the repository's root or that folder."""
    ratings = Path(ratings)
    if (ratings / "behavioral_data").is_dir():  # the repository's root
        ratings = ratings / "behavioral_data"
    if images is not None:
        return ratings, Path(images)
    candidates = [ratings / "images", ratings.parent / "behavioral_experiments" / "evaluation_sighted" / "stimuli"]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        raise DataError(f"no rated images in {candidates[0]} or {candidates[1]}; pass --images the folder holding them")
    return ratings, found


def read_ratings(folder: str | Path, sighted_by: str = "key", drop_images: tuple[str, ...] = ()) -> Ratings:
    """Read the released CSV files under ``folder`` and average each description's ratings.

    A rating that is empty, NA or not a number is left out of its cell's mean and counted. As in
    Kreiss et al.'s own analysis, the sighted groups keep only the descriptions BLV participants
    rated (68 in the release), when the BLV file is there; the others are counted. ``sighted_by``
    says which: "key" (ours) keeps a sighted description whose (context, img_id, text) a BLV
    participant rated; "text" (cosid.py, and Kreiss et al.'s analysis) one whose text alone they
    rated. ``drop_images`` leaves out, and counts, the descriptions of images whose img_id or
    img_file stem it names (cosid.py: ATTENTION_CHECK_IMAGES).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"ratings folder not found: {folder}; pass --ratings the behavioral_data/ folder")
    tables: dict[str, list[dict]] = {}
    for name in (BLV_FILE, SIGHTED_FILE):
        if os.path.lexists(folder / name):
            groups = [g for g, (file, _) in GROUPS.items() if file == name]
            needed = list(KEY_COLUMNS) + [c for g in groups for c in rating_columns(g).values()]
            tables[name] = read_csv(folder / name, needed)
    if not tables:
        raise DataError(f"{folder}: neither {BLV_FILE} nor {SIGHTED_FILE} is there; pass --ratings the behavioral_data/ folder")

    ratings = Ratings(means={}, image_files={})
    keyed: dict[str, list[tuple[Description, dict]]] = {}
    for name, rows in tables.items():
        keyed[name] = [(description_key(row), row) for row in rows]
        unkeyed = sum(key is None for key, _ in keyed[name])
        if unkeyed:
            ratings.skipped[f"rows of {name} without img_id or description"] += unkeyed
    for group, (name, _) in GROUPS.items():
        if name not in tables:
            continue
        ratings.groups.append(group)
        for dim, column in rating_columns(group).items():
            values: dict[Description, list[float]] = defaultdict(list)
            for key, row in keyed[name]:
                value = parse_rating(row[column])
                if key is not None and value is None:
                    ratings.skipped[f"{group} {dim} ratings missing or not a number"] += 1
                elif key is not None:
                    values[key].append(value)
            ratings.means[dim, group] = {key: float(np.mean(v)) for key, v in values.items()}

    blv_rated = {key for (_, group), means in ratings.means.items() if group == "BLV" for key in means}
    if blv_rated:
        rated = blv_rated if sighted_by == "key" else {text for _, _, text in blv_rated}

        def kept(key: Description) -> bool:
            return (key if sighted_by == "key" else key[2]) in rated

        for (dim, group), means in ratings.means.items():
            if group != "BLV":
                ratings.means[dim, group] = {k: v for k, v in means.items() if kept(k)}
        left_out = {key for key, _ in keyed.get(SIGHTED_FILE, []) if key is not None and not kept(key)}
        if left_out:
            ratings.skipped["sighted-rated descriptions no BLV participant rated (Kreiss et al. leave them out)"] += \
                len(left_out)
    # The BLV file does not name the image files; all_descriptions.csv and the sighted file do.
    mapping_rows = read_csv(folder / DESCRIPTIONS_FILE, ["img_id", "img_file"]) if os.path.lexists(folder / DESCRIPTIONS_FILE) else []
    for row in mapping_rows + [r for r in tables.get(SIGHTED_FILE, []) if r.get("img_file")]:
        if row.get("img_id") and row.get("img_file"):
            ratings.image_files.setdefault(row["img_id"].strip(), row["img_file"].strip())
    if drop_images:
        dropped = {key for means in ratings.means.values() for key in means
                   if key[1] in drop_images or Path(ratings.image_files.get(key[1], "")).stem in drop_images}
        for cell, means in ratings.means.items():
            ratings.means[cell] = {k: v for k, v in means.items() if k not in dropped}
        if dropped:
            ratings.skipped[f"rated descriptions of the images {', '.join(drop_images)} (cosid.py drops them)"] += \
                len(dropped)
    return ratings


def read_csv(path: Path, needed: list[str]) -> list[dict]:
    """Rows of a CSV file as dicts; a file without the needed columns is an error naming them."""
    try:
        reader = csv.DictReader(io.StringIO(read_text_whole(path, MAX_CSV_BYTES, "CSV file"), newline=""))
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; is this the released {path.name}?")
        return list(reader)
    except UnreadableFile as err:
        raise DataError(str(err)) from None
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from None


def description_key(row: dict) -> Description | None:
    img_id, text = (row.get("img_id") or "").strip(), " ".join((row.get("description") or "").split())
    if not img_id or empty_once_cleaned(text):
        return None
    return (row.get("context") or "").strip(), img_id, text


def parse_rating(value: str | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
