"""Word imageability and concreteness of the toy vocabulary, written as the Glasgow Norms and Brysbaert et al.'s files (page 08)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from .vocabulary import (BACKGROUNDS, CITIES, COLOR_SURNAMES, COLORS, DOMAINS, EVENTS, FIRST_NAMES, GENERIC_NOUNS, MONTHS,
                         OBJECT_NOUNS, PROFESSIONS, RADII, SHAPE_PLURALS, SHAPES, SURNAMES)

# Glasgow Norms dimensions after "Words" and "Length", each with M / SD / N sub-columns, and the
# range of each rating scale.
GLASGOW_DIMENSIONS = {
    "AROU": (1, 9), "VAL": (1, 9), "DOM": (1, 9), "CNC": (1, 7), "IMAG": (1, 7),
    "FAM": (1, 7), "AOA": (1, 7), "SIZE": (1, 9), "GEND": (1, 9),
}


def toy_word_ratings() -> dict[str, float]:
    """Imageability (1..7) of the toy vocabulary: high for what is drawn, low for caption facts.

    Function words are left out, as the Glasgow Norms leave most of them out.
    """
    visual = (
        list(SHAPES) + list(SHAPE_PLURALS.values()) + list(COLORS) + list(BACKGROUNDS) + list(RADII)
        + ["left", "right", "top", "bottom", "center", "middle", "one", "two", "three"]
    )
    groups = [  # (words, lowest and highest mean rating)
        (visual, (6.0, 6.9)),
        (["background", "plain"], (4.8, 5.4)),
        # Object nouns name a thing but not how it looks here: middling.
        ([n for nouns in OBJECT_NOUNS.values() for n in nouns], (3.5, 4.5)),
        (list(GENERIC_NOUNS) + list(DOMAINS) + list(PROFESSIONS) + list(EVENTS), (2.0, 3.0)),
        (list(FIRST_NAMES) + list(SURNAMES) + list(CITIES) + list(MONTHS), (1.5, 2.5)),
        ([n for names in COLOR_SURNAMES.values() for n in names], (1.5, 2.5)),
        (["collection", "presented", "commissioned", "attributed", "undated", "found", "given",
          "held", "records", "organised", "assembled"], (1.5, 2.8)),
    ]
    rng = random.Random(0)
    ratings: dict[str, float] = {}
    for words, (low, high) in groups:
        for phrase in words:
            for word in phrase.lower().split():
                ratings.setdefault(word, round(rng.uniform(low, high), 3))
    return ratings


def write_glasgow_norms(path: Path, ratings: dict[str, float], seed: int = 0) -> None:
    """A CSV in the Glasgow Norms layout with `ratings` as IMAG means; other columns plausible filler."""
    rng = random.Random(seed)
    header = ["Words", "Length"]
    subheader = ["", ""]
    for dimension in GLASGOW_DIMENSIONS:
        header += [dimension, "", ""]
        subheader += ["M", "SD", "N"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerow(subheader)
        for word in sorted(ratings):
            row: list[object] = [word, len(word)]
            for dimension, (low, high) in GLASGOW_DIMENSIONS.items():
                if dimension == "IMAG":
                    mean = ratings[word]
                elif dimension == "CNC":  # concreteness tracks imageability closely
                    mean = min(high, max(low, ratings[word] + rng.uniform(-0.4, 0.4)))
                else:
                    mean = rng.uniform(low + 1, high - 1)
                row += [f"{mean:.3f}", f"{rng.uniform(0.6, 1.8):.3f}", rng.randint(30, 34)]
            writer.writerow(row)


# Brysbaert et al. (2014)'s columns, tab-separated, and their concreteness scale.
BRYSBAERT_COLUMNS = ("Word", "Bigram", "Conc.M", "Conc.SD", "Unknown", "Total", "Percent_known", "SUBTLEX", "Dom_Pos")
BRYSBAERT_SCALE = (1, 5)


def write_brysbaert_concreteness(path: Path, ratings: dict[str, float], seed: int = 1) -> None:
    """A file in Brysbaert et al.'s layout whose Conc.M follows ``ratings`` (imageability, 1..7) on its 1..5 scale.

    Concreteness and imageability are different norms that agree closely on most words (what is
    drawn is both), so each word's concreteness is its imageability rescaled, give or take 0.3.
    """
    rng = random.Random(seed)
    low, high = BRYSBAERT_SCALE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(BRYSBAERT_COLUMNS)]
    for word in sorted(ratings):
        mean = min(high, max(low, low + (ratings[word] - 1) * (high - low) / 6 + rng.uniform(-0.3, 0.3)))
        total = rng.randint(25, 30)
        known = total - rng.randint(0, 1)
        lines.append("\t".join([word, "0", f"{mean:.2f}", f"{rng.uniform(0.5, 1.5):.2f}", str(total - known), str(total),
                                f"{known / total:.2f}", str(rng.randint(0, 5000)), "Noun"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
