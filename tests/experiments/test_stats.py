"""Means with 95% t-intervals, paired differences and verdicts, checked against scipy on known numbers."""
import math

import numpy as np
import pytest
from scipy import stats as st

from daenr_fast.experiments.stats import by_seed, mean_ci, paired_difference, verdict


def test_mean_ci_matches_scipy_t_interval():
    values = [0.041, 0.046, 0.043, 0.050]
    ci = mean_ci(values)
    low, high = st.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
    assert ci.n == 4
    assert ci.mean == pytest.approx(0.045)
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)


def test_mean_ci_hand_computed():
    # 1, 2, 3: mean 2, s = 1, half = t_{0.975,2} / sqrt(3) = 4.302653 / 1.732051
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.half_width == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-9)


def test_mean_ci_small_and_missing():
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    none = mean_ci([])
    assert none.n == 0 and math.isnan(none.mean)
    assert mean_ci([1.0, float("nan"), 3.0, None]).n == 2


def test_paired_difference_uses_common_seeds_only():
    a = {0: 0.040, 1: 0.042, 2: 0.045, 3: 0.5}
    b = {0: 0.080, 1: 0.081, 2: 0.086}
    d = paired_difference(a, b)
    expected = [-0.040, -0.039, -0.041]
    low, high = st.t.interval(0.95, 2, loc=np.mean(expected), scale=st.sem(expected))
    assert d.n == 3
    assert d.mean == pytest.approx(np.mean(expected))
    assert (d.low, d.high) == pytest.approx((low, high))


@pytest.mark.parametrize("values, lower_is_better, expected", [
    ([-0.04, -0.039, -0.041], True, "supported"),
    ([-0.04, -0.039, -0.041], False, "contradicted"),
    ([0.02, 0.03, 0.025], False, "supported"),
    ([0.02, 0.03, 0.025], True, "contradicted"),
    ([-0.01, 0.02, 0.0], True, "not resolved"),
    ([-0.04], True, "untestable"),
])
def test_verdict(values, lower_is_better, expected):
    assert verdict(mean_ci(values), lower_is_better) == expected


def test_by_seed_reads_csv_strings_and_drops_empty():
    rows = [{"seed": "0", "mse": "0.04"}, {"seed": "1", "mse": ""}, {"seed": "2", "mse": "nan"},
            {"seed": "3", "mse": "0.05"}]
    assert by_seed(rows, "mse") == {0: 0.04, 3: 0.05}
