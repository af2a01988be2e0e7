"""Phrase pools for ``eval.py prefer``: the phrases a description is built from, each with its kind.

EX2 ("If CLIP Could Talk", Esfandiarpoor et al. 2024) sorts what an aligned generator writes into
kinds of attributes. Here the generator can only choose among fixed phrases, so every phrase
carries its label from the start:

    visual       what the picture shows: colour, shape, size, texture, parts, position
    non-visual   what a caption adds and a picture cannot show: names, places, dates, habitat, use
    spurious     web boilerplate that describes nothing: "click to enlarge", "stock photo of"

A pool file is tab-separated UTF-8 text with the header ``phrase<TAB>kind<TAB>attribute`` and one
phrase per line; kind is one of KINDS, attribute is a free word for the finer sort ("colour",
"places"). Blank lines and lines starting with ``#`` are skipped. Every other line must be valid:
a bad line is an error that names it, never silently dropped.

    phrase	kind	attribute
    with a red breast	visual	colour
    seen in Ohio	non-visual	places
    click to enlarge	spurious	boilerplate
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..files import UnreadableFile, read_text_whole
from ..tokenizer import empty_once_cleaned
from .toy import BACKGROUND_CITIES, BACKGROUNDS, COLOR_SURNAMES, COLORS, OBJECT_NOUNS, POSITION_PHRASES, SHAPES

KINDS = ("visual", "non-visual", "spurious")
POOL_HEADER = ("phrase", "kind", "attribute")
POOL_FILE = "phrases.tsv"  # looked for in a transfer task folder when --pool is not given


class PoolError(ValueError):
    """A phrase-pool file that cannot be used; the message says which line and what to do."""


@dataclass(frozen=True)
class Phrase:
    text: str  # as it goes into the description: "a red shape"
    kind: str  # one of KINDS
    attribute: str  # the finer label within the kind: "colour", "places", "boilerplate"


# A pool is a few dozen lines; a phrase is chosen by a softmax over every line, so even 16 MiB of them is far past use.
MAX_POOL_BYTES = 16 << 20


def read_pool(path: str | Path) -> list[Phrase]:
    """Read a phrase-pool file (tab-separated, see the module docstring)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise PoolError(f"phrase pool not found: {path}; pass --pool a .tsv file with columns {', '.join(POOL_HEADER)}")
    try:
        lines = read_text_whole(path, MAX_POOL_BYTES, "phrase pool").splitlines()
    except UnreadableFile as err:
        raise PoolError(str(err)) from None
    rows = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not rows or tuple(c.strip().lower() for c in rows[0][1].split("\t")) != POOL_HEADER:
        raise PoolError(f"{path}: the first line must be the header {'<TAB>'.join(POOL_HEADER)}")
    pool, seen = [], set()
    for number, line in rows[1:]:
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != 3 or not all(cells) or empty_once_cleaned(cells[0]):
            raise PoolError(f"{path}:{number}: expected phrase<TAB>kind<TAB>attribute, all three filled (the phrase with "
                            f"words, not only entities such as &nbsp;), got {line!r}")
        text, kind, attribute = cells
        if kind not in KINDS:
            raise PoolError(f"{path}:{number}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if text in seen:
            raise PoolError(f"{path}:{number}: the phrase {text!r} is listed twice; keep one")
        seen.add(text)
        pool.append(Phrase(text, kind, attribute))
    check_pool(pool, str(path))
    return pool


def check_pool(pool: list[Phrase], where: str) -> None:
    """A policy needs at least two phrases to choose between."""
    if len(pool) < 2:
        raise PoolError(f"{where}: a phrase pool needs at least 2 phrases, got {len(pool)}")


def toy_pool() -> list[Phrase]:
    """Phrases for the toy world's colour and background concepts, built from the toy world's words.

    The visual ones name what toy images show (the toy world has no texture or parts; it has
    size). The non-visual ones are what toy captions say instead: colour-evoking surnames,
    the cities tied to backgrounds, dates, events, and the object nouns that hint at a shape.
    The spurious ones are web boilerplate the toy model never read.
    """
    def a(word: str) -> str:
        return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"

    visual = (
        [(f"{a(color)} shape", "colour") for color in COLORS]
        + [(f"on {a(bg)} background", "colour") for bg in BACKGROUNDS]
        + [(a(shape), "shape") for shape in SHAPES]
        + [("a large shape", "size"), ("a small shape", "size")]
        + [(phrases[0], "position") for phrases in POSITION_PHRASES.values()]
    )
    non_visual = (
        [(f"the {names[0]} collection", "names") for names in COLOR_SURNAMES.values()]
        + [("by Ilse Varga", "names"), ("by Marek Okafor", "names")]
        + [(f"in {city}", "places") for city in BACKGROUND_CITIES.values()]
        + [("in Kyoto", "places"), ("in Tallinn", "places")]
        + [("in 1923", "dates"), ("in 1887", "dates"), ("in May 1950", "dates")]
        + [("at the Fair", "events"), ("at the Regatta", "events")]
        + [(a(nouns[0]), "objects") for nouns in OBJECT_NOUNS.values()]
    )
    spurious = [
        "click to enlarge", "stock photo of", "free download", "high resolution image",
        "image courtesy of the museum", "thumbnail", "photo by the author", "all rights reserved",
    ]
    return ([Phrase(text, "visual", attribute) for text, attribute in visual]
            + [Phrase(text, "non-visual", attribute) for text, attribute in non_visual]
            + [Phrase(text, "spurious", "boilerplate") for text in spurious])
