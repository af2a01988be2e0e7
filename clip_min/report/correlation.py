"""Do the model's numbers agree with people's? Pearson r and Spearman rho for Tables 2 and 3.

Table 2 correlates the model's score of each rated description with the description's mean
rating (clip_min/data/ratings.py): :func:`correlate_with_ratings`. Table 3 correlates each word
occurrence's attribution (clip_min/attribution.py) with the word's rating in a norm
(clip_min/data/norms.py): :func:`correlate_with_norms`. Both go through :func:`pearson_spearman`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Hashable

import numpy as np
from scipy import stats


def pearson_spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Pearson's r, its p-value, Spearman's rho and its p-value of x against y; NaNs where one is constant."""
    with warnings.catch_warnings():  # a constant input has no correlation: scipy warns and returns NaN
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
    return float(pearson.statistic), float(pearson.pvalue), float(spearman.statistic), float(spearman.pvalue)


def correlate_with_ratings(scores: dict[Hashable, float], means: dict[Hashable, float]) -> dict:
    """Pearson's r and Spearman's rho (with p-values) between model scores and mean ratings (Table 2).

    Only descriptions with both a score and a mean count; fewer than 3 gives NaNs.
    """
    keys = [k for k in means if k in scores]
    result = {"n": len(keys), "pearson": math.nan, "pearson_p": math.nan, "spearman": math.nan, "spearman_p": math.nan}
    if len(keys) < 3:
        return result
    x = np.array([scores[k] for k in keys])
    y = np.array([means[k] for k in keys])
    pearson, pearson_p, spearman, spearman_p = pearson_spearman(x, y)
    result.update(pearson=pearson, pearson_p=pearson_p, spearman=spearman, spearman_p=spearman_p)
    return result


@dataclass
class Correlation:
    """Pearson r and Spearman rho of word attributions with a norm, over the words it rates."""

    pearson: float | None  # None when fewer than 3 words, or no spread
    spearman: float | None
    n: int  # word occurrences (or, correlate_tokens, unique tokens) rated by the norm
    missing: int  # word occurrences (unique tokens), letters only, the norm does not rate


def correlate_with_norms(words: list[tuple[str, float]], norms: dict[str, float]) -> Correlation:
    """Correlate each word occurrence's attribution with the norm's rating of the word.

    Punctuation and numbers are not words to the norms and are left out without counting;
    words the norm does not list are left out and counted.
    """
    pairs, missing = [], 0
    for word, value in words:
        key = word.lower()
        if key in norms:
            pairs.append((value, norms[key]))
        elif key.isalpha():
            missing += 1
    if len(pairs) < 3:
        return Correlation(None, None, len(pairs), missing)
    a, r = np.array(pairs).T
    if np.ptp(a) == 0 or np.ptp(r) == 0:
        return Correlation(None, None, len(pairs), missing)
    pearson, _, spearman, _ = pearson_spearman(a, r)
    return Correlation(pearson, spearman, len(pairs), missing)


def correlate_tokens(tokens: list[tuple[str, float]], norms: dict[str, float]) -> Correlation:
    """The authors' Table 3 unit (ig.py): each unique token's mean attribution over all its occurrences,
    correlated with the norm across the unique tokens it rates (exact string match)."""
    sums: dict[str, list[float]] = {}
    for token, value in tokens:
        sums.setdefault(token, []).append(value)
    rated = [(float(np.mean(values)), norms[token]) for token, values in sums.items() if token in norms]
    missing = sum(1 for token in sums if token not in norms and token.isalpha())
    if len(rated) < 3:
        return Correlation(None, None, len(rated), missing)
    a, r = np.array(rated).T
    if np.ptp(a) == 0 or np.ptp(r) == 0:
        return Correlation(None, None, len(rated), missing)
    pearson, _, spearman, _ = pearson_spearman(a, r)
    return Correlation(pearson, spearman, len(rated), missing)


def format_correlation_table(rows: list[tuple[str, str, dict[str, Correlation]]], norm_names: list[str]) -> str:
    """Table 3's layout in markdown: a row per (attribution kind, text kind), r and rho per norm."""
    header = ["attribution", "texts"]
    for name in norm_names:
        header += [f"{name} r", f"{name} ρ", f"{name} words (missing)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def number(value: float | None) -> str:
        return "—" if value is None else f"{value:+.2f}"

    for kind, texts, by_norm in rows:
        cells = [kind, texts]
        for name in norm_names:
            c = by_norm[name]
            cells += [number(c.pearson), number(c.spearman), f"{c.n} ({c.missing})"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
