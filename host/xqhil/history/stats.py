"""Robust statistics for latency samples (numpy only; no SciPy on the host path).

Latency samples are right-skewed with rare large outliers (page faults, interrupts, a busy neighbour),
so scale is measured with the median absolute deviation, medians are compared instead of means, and the
significance test is rank based (Mann-Whitney U), which outliers cannot dominate.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD * this estimates sigma for normal data
IQR_TO_SIGMA = 1.0 / 1.349
MEDIAN_SE = 1.2533  # sqrt(pi/2): SE(median) = this * sigma / sqrt(n) for normal data


def robust_sigma(values: Sequence[float]) -> float:
    """A scale estimate that ignores outliers: MAD, else IQR, else the standard deviation."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return 0.0
    mad = float(np.median(np.abs(x - np.median(x))))
    if mad > 0:
        return MAD_TO_SIGMA * mad
    q1, q3 = np.percentile(x, [25, 75])
    if q3 > q1:
        return float(q3 - q1) * IQR_TO_SIGMA
    return float(np.std(x, ddof=1))


def median_se(values: Sequence[float]) -> float:
    """Standard error of the sample median."""
    n = len(values)
    return MEDIAN_SE * robust_sigma(values) / math.sqrt(n) if n >= 2 else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts + 1) / 2.0)[inverse.ravel()]


def mann_whitney_greater(current: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that ``current`` tends to be larger than ``baseline``.

    Normal approximation with tie and continuity corrections (fine from about 8 samples a side).
    """
    a = np.asarray(current, dtype=float)
    b = np.asarray(baseline, dtype=float)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return 1.0
    joined = np.concatenate([a, b])
    ranks = average_ranks(joined)
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    _, counts = np.unique(joined, return_counts=True)
    tie_term = float((counts ** 3 - counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def drop_spikes(values: Sequence[float], k: float = 6.0) -> np.ndarray:
    """``values`` without spikes more than ``k`` robust sigmas above their own median (interrupts, page
    faults): a handful of them would otherwise outrank a whole slowed-down run in the rank test."""
    x = np.asarray(values, dtype=float)
    sigma = robust_sigma(x)
    if sigma <= 0:
        return x
    return x[x <= np.median(x) + k * sigma]


def successive_noise(medians: Sequence[float]) -> float:
    """Run-to-run sigma of one run's median, from differences of consecutive runs.

    Differences ignore slow level changes (a faster runtime release) that a plain spread would count
    as noise; the median of |difference| is robust to one bad run. For two runs with independent noise
    sigma, |difference| has median 0.6745 * sqrt(2) * sigma.
    """
    x = np.asarray(medians, dtype=float)
    if x.size < 3:
        return 0.0
    return float(np.median(np.abs(np.diff(x)))) * MAD_TO_SIGMA / math.sqrt(2.0)


def t_quantile(z: float, df: float) -> float:
    """Student-t quantile with ``df`` degrees of freedom at the tail probability of the normal ``z``
    (Cornish-Fisher expansion; within a few percent for df >= 3): widens thresholds built from few samples."""
    if df <= 0:
        return float("inf")
    z3, z5 = z ** 3, z ** 5
    return z + (z3 + z) / (4 * df) + (5 * z5 + 16 * z3 + 3 * z) / (96 * df ** 2)


def pooled_sigma(a: Sequence[float], b: Sequence[float]) -> float:
    """Robust sigma of both samples' residuals around their own medians (twice the data of either)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return 0.0
    return robust_sigma(np.concatenate([x - np.median(x), y - np.median(y)]))
