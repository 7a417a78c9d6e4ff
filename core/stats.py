"""Statistics of the evidence a run reports: the paired bootstrap interval of an expert's difference to its
foundation model over the test cases."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


def paired_bootstrap(
    n_cases: int,
    difference: Callable[[np.ndarray], float],
    samples: int = BOOTSTRAP_SAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point estimate, low, high) of a paired difference over `n_cases` test cases.

    `difference(indices)` is the expert's metric minus the teacher's, both computed on the cases `indices` (with
    repeats): a mean of per-case values (Dice, correctness) or a metric of the whole set (AUC). The cases are
    resampled with replacement `samples` times and the interval is the percentile interval of `level` (seeded: the
    same call gives the same interval). With fewer than two cases the interval is the point itself (nothing to
    resample)."""
    if n_cases < 1:
        raise ValueError("paired_bootstrap needs at least one case")
    point = float(difference(np.arange(n_cases)))
    if n_cases < 2:
        return point, point, point
    # all resamples drawn in one call: a call per resample releases and re-takes the GIL each time, and a thread
    # doing that thousands of times keeps the GUI thread from getting it (CPython's convoy effect: 50 ms stalls)
    resamples = np.random.default_rng(seed).integers(0, n_cases, (samples, n_cases))
    values = []
    for indices in resamples:
        value = float(difference(indices))
        if np.isfinite(value):  # a resample without both classes has no AUC: it says nothing about the difference
            values.append(value)
    if not values:
        return point, float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return point, float(low), float(high)


def mean_difference(expert: Sequence[float], teacher: Sequence[float]) -> Callable[[np.ndarray], float]:
    """`difference` for per-case values: mean(expert - teacher) over the chosen cases (paired by index)."""
    diff = np.asarray(expert, dtype=np.float64) - np.asarray(teacher, dtype=np.float64)
    if diff.ndim != 1:
        raise ValueError("expert and teacher need one value per case")
    return lambda idx: float(diff[idx].mean())
