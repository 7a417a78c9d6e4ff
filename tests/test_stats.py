"""The paired bootstrap interval: known answers on constructed cases."""

import numpy as np
import pytest

from core.stats import mean_difference, paired_bootstrap


def test_a_constant_difference_has_a_point_interval():
    expert, teacher = np.full(30, 0.9), np.full(30, 0.85)
    point, low, high = paired_bootstrap(30, mean_difference(expert, teacher))
    assert point == pytest.approx(0.05) and low == pytest.approx(0.05) and high == pytest.approx(0.05)


def test_the_interval_matches_the_normal_approximation():
    """Differences with standard deviation 0.1 over 400 cases: the 95 % interval of the mean is about
    +-1.96 * 0.1 / 20 = +-0.0098 around the sample mean."""
    rng = np.random.default_rng(1)
    diff = rng.normal(0.02, 0.1, 400)
    point, low, high = paired_bootstrap(400, mean_difference(diff, np.zeros(400)), samples=4000, seed=3)
    assert point == pytest.approx(diff.mean())
    half = 1.96 * diff.std() / np.sqrt(400)
    assert low == pytest.approx(point - half, abs=0.0015) and high == pytest.approx(point + half, abs=0.0015)
    assert paired_bootstrap(400, mean_difference(diff, np.zeros(400)), samples=4000, seed=3) == (point, low, high)


def test_pairing_removes_the_case_to_case_spread():
    """Expert and teacher share a large per-case spread; their difference is constant: paired, the interval is
    the constant (an unpaired comparison would be wide)."""
    base = np.linspace(0.2, 0.95, 50)
    _, low, high = paired_bootstrap(50, mean_difference(base + 0.03, base))
    assert low == pytest.approx(0.03) and high == pytest.approx(0.03)


def test_a_whole_set_metric_skips_resamples_where_it_is_undefined():
    """AUC-like metrics are undefined on a resample with one class: such resamples are left out, not NaN."""
    labels = np.array([0, 1] * 5)

    def difference(idx):
        return float("nan") if len(set(labels[idx])) < 2 else 0.1

    point, low, high = paired_bootstrap(10, difference, samples=500)
    assert (point, low, high) == (0.1, 0.1, 0.1)


def test_one_case_has_no_interval_to_resample():
    assert paired_bootstrap(1, mean_difference([0.7], [0.6])) == pytest.approx((0.1, 0.1, 0.1))
