"""95% intervals for the benches: Wilson for one accuracy, percentile bootstrap for anything derived from several."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959964


def wilson_interval(correct: int | float, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total`` (sound near 0% and 100%, unlike the normal one)."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_bootstrap(
    accuracies: Sequence[float],
    sizes: Sequence[int],
    statistic: Callable[[np.ndarray], object],
    replicates: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """``statistic`` over accuracies redrawn as Binomial(size, accuracy) / size, once per replicate.

    A parametric bootstrap: each measured accuracy is taken as the truth of its own evaluation set and drawn
    again with that set's sampling noise, independently. Returns the ``replicates`` values (may hold inf), one
    row per replicate when ``statistic`` returns several numbers.
    """
    rng = np.random.default_rng(seed)
    p, n = np.asarray(accuracies, dtype=float), np.asarray(sizes, dtype=int)
    draws = rng.binomial(n, np.clip(p, 0.0, 1.0), size=(replicates, len(p))) / np.maximum(n, 1)
    return np.array([statistic(row) for row in draws], dtype=float)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` share of bootstrap values, picked from the values themselves (inf is kept as inf)."""
    tail = (1 - level) / 2
    ordered = np.sort(np.asarray(values, dtype=float))
    return (
        float(np.quantile(ordered, tail, method="inverted_cdf")),
        float(np.quantile(ordered, 1 - tail, method="inverted_cdf")),
    )


def paired_difference_interval(
    a: Sequence[float], b: Sequence[float], replicates: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap of ``mean(a) - mean(b)`` over items scored twice (the same items resampled for both)."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(a_), size=(replicates, len(a_)))
    return percentile_interval((a_[picks] - b_[picks]).mean(axis=1), level)
