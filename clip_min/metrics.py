"""The paper's evaluation numbers: preference accuracy, macro-F1, recovery, transfer score, trade-off."""

from __future__ import annotations

import numpy as np
import torch


def preference_accuracy(*, c_des: torch.Tensor, c_cap: torch.Tensor) -> float:
    """Share of images whose description outscores their caption: mean[C(im, des) > C(im, cap)]."""
    return float((c_des > c_cap).float().mean())


def bootstrap_interval(values: np.ndarray, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. 0/1 wins per image)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def macro_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), as scikit-learn's macro average.

    Classes that never occur and are never predicted are left out of the mean; a class with
    no true positive gets F1 = 0.
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    scores = []
    for c in range(n_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def recovery(f1: dict[str, float], base_f1: dict[str, float]) -> dict[str, float]:
    """Appendix C: model F1 / base CLIP F1, per task (tasks the base scores 0 on are left out)."""
    return {task: value / base_f1[task] for task, value in f1.items() if base_f1.get(task)}


def transfer_score(f1: dict[str, float], base_f1: dict[str, float]) -> float | None:
    """Appendix C: mean over tasks of the recovery, model F1 / base CLIP F1."""
    tasks = [t for t in f1 if base_f1.get(t)]
    if not tasks:
        return None
    return float(np.mean([f1[t] / base_f1[t] for t in tasks]))


def trade_off(accuracy: float, transfer: float, a: float) -> float:
    """Appendix C model selection: a * Concadia accuracy + (1 - a) * transfer score."""
    return a * accuracy + (1 - a) * transfer
