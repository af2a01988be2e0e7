"""Word norms: how imageable and how concrete people rate a word, read in their released formats.

Table 3 correlates word attributions with two norms: imageability from the Glasgow Norms (Scott
et al. 2019, a CSV with two header rows) and concreteness from Brysbaert et al. (2014, a
tab-separated file). Each reader returns word -> mean rating. Ours folds the words: lower case,
and a word the Glasgow Norms list only by sense ("bank (money)", "bank (river)") takes its
senses' mean. ``exact=True`` keeps every word as the file writes it, as the authors' ig.py
matches them (a word listed twice takes its entries' mean, as its merge and groupby do).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..files import UnreadableFile, read_whole

# The Glasgow Norms (5,553 words) and Brysbaert et al.'s 40,000 words are 1 to 2 MB each.
MAX_NORMS_BYTES = 256 << 20


class NormsError(ValueError):
    """A word-norms file that cannot be read; the message says what was expected."""


def _open_text(path: Path):
    try:
        data = read_whole(path, MAX_NORMS_BYTES, "norms file")
    except UnreadableFile as err:
        raise NormsError(str(err)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # spreadsheet exports of both norms are often Latin-1


def _finish_norms(plain: dict[str, float], senses: dict[str, list[float]]) -> dict[str, float]:
    """Words listed only with senses ("bank (money)", "bank (river)") take their senses' mean."""
    for word, values in senses.items():
        plain.setdefault(word, float(np.mean(values)))
    return plain


def _exact_norms(entries: list[tuple[str, float]]) -> dict[str, float]:
    """Word as written -> rating; a word listed twice takes its entries' mean."""
    values: dict[str, list[float]] = {}
    for word, value in entries:
        values.setdefault(word, []).append(value)
    return {word: float(np.mean(v)) for word, v in values.items()}


def read_glasgow_norms(path: str | Path, dimension: str = "IMAG", exact: bool = False) -> dict[str, float]:
    """Word -> mean rating of ``dimension`` (IMAG: imageability, CNC: concreteness) from the Glasgow Norms CSV.

    Two header rows: dimension names ("Words", "Length", "AROU", "", "", ...), then M / SD / N
    under each dimension. Ambiguous words appear with a sense in brackets; see _finish_norms
    (or, ``exact``, _exact_norms).
    """
    path = Path(path)
    rows = list(csv.reader(io.StringIO(_open_text(path))))
    expected = f"expected the Glasgow Norms CSV (a 'Words' column, '{dimension}' over an 'M' column in the second row)"
    if len(rows) < 2 or "Words" not in rows[0] or dimension not in rows[0]:
        raise NormsError(f"{path} is not in the Glasgow Norms format: {expected}")
    word_col, mean_col = rows[0].index("Words"), rows[0].index(dimension)
    # Each dimension spans three columns, M, SD and N in the second header row; the mean comes first.
    if mean_col >= len(rows[1]) or rows[1][mean_col].strip() != "M":
        raise NormsError(f"{path}: no 'M' under '{dimension}' in the second header row; {expected}")
    plain, senses, entries = {}, {}, []
    for line, row in enumerate(rows[2:], start=3):
        if not any(cell.strip() for cell in row):
            continue
        try:
            written, value = row[word_col], float(row[mean_col])
        except (IndexError, ValueError):
            raise NormsError(f"{path}, line {line}: no number in the {dimension} M column; the file is damaged") from None
        entries.append((written, value))
        word = written.strip()
        name, bracket, _ = word.partition(" (")
        if bracket:
            senses.setdefault(name.strip().lower(), []).append(value)
        else:
            plain[word.lower()] = value
    return _exact_norms(entries) if exact else _finish_norms(plain, senses)


def read_brysbaert_concreteness(path: str | Path, exact: bool = False) -> dict[str, float]:
    """Word -> Conc.M (1..5) from Brysbaert et al. (2014): tab-separated, columns Word, Bigram, Conc.M, ...

    Words in lower case, or (``exact``) as written.
    """
    path = Path(path)
    lines = [line for line in _open_text(path).splitlines() if line.strip()]
    header = lines[0].split("\t") if lines else []
    if "Word" not in header or "Conc.M" not in header:
        raise NormsError(f"{path} is not Brysbaert et al.'s concreteness file: expected tab-separated "
                         f"columns with 'Word' and 'Conc.M' in the first line")
    word_col, mean_col = header.index("Word"), header.index("Conc.M")
    table, entries = {}, []
    for line_number, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            written, value = cells[word_col], float(cells[mean_col])
        except (IndexError, ValueError):
            raise NormsError(f"{path}, line {line_number}: no number in the Conc.M column; the file is damaged") from None
        entries.append((written, value))
        table[written.strip().lower()] = value
    return _exact_norms(entries) if exact else table


def load_norms(imageability: str | Path | None, concreteness: str | Path | None,
               exact: bool = False) -> dict[str, dict[str, float]]:
    """The norms to correlate with, by column name. Without a Brysbaert file, Glasgow's CNC stands in."""
    norms = {}
    if imageability is not None:
        norms["imageability"] = read_glasgow_norms(imageability, "IMAG", exact)
    if concreteness is not None:
        norms["concreteness"] = read_brysbaert_concreteness(concreteness, exact)
    elif imageability is not None:
        norms["concreteness (Glasgow CNC)"] = read_glasgow_norms(imageability, "CNC", exact)
    return norms
