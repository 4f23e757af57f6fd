"""Statistics on small exact samples (values checked by hand or against numpy / scipy)."""

from __future__ import annotations

import math

import pytest

from harness.seeds import mean_ci, t_quantile
from tasks.instruments.stats import (
    Summary,
    loglog_slope,
    median_ci,
    median_ci_rel_half_width,
    paired_ratios,
    quantile,
    summarize,
)

SAMPLE = (3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0)  # sorted: 1 1 2 3 4 5 6 9


@pytest.mark.parametrize(
    ("q", "expected"),
    # numpy.quantile(SAMPLE, q) with the default method="linear"
    [(0.0, 1.0), (0.1, 1.0), (0.25, 1.75), (0.5, 3.5), (0.75, 5.25), (0.9, 6.9), (1.0, 9.0)],
)
def test_quantile_matches_type_7(q: float, expected: float) -> None:
    assert quantile(SAMPLE, q) == pytest.approx(expected)


def test_quantile_edge_cases() -> None:
    assert quantile([7.0], 0.3) == 7.0
    assert quantile([1.0, 2.0], 0.5) == 1.5
    with pytest.raises(ValueError):
        quantile(SAMPLE, 1.5)
    with pytest.raises(ValueError):
        quantile([], 0.5)


@pytest.mark.parametrize(
    ("n", "expected"),
    # Binomial(n, 1/2): n=6..8 reach 95% only with the extremes (coverage 0.969, 0.984, 0.992);
    # n=9 allows ranks (2, 8): 1 - 2 * 10/512 = 0.961; n=9 at ranks (3, 7) would be 0.820.
    [(5, None), (6, (0.0, 5.0)), (8, (0.0, 7.0)), (9, (1.0, 7.0)), (11, (1.0, 9.0))],
)
def test_median_ci_order_statistics(n: int, expected: tuple[float, float] | None) -> None:
    assert median_ci([float(i) for i in range(n)]) == expected


def test_median_ci_at_lower_confidence_is_narrower() -> None:
    xs = [float(i) for i in range(20)]
    wide, narrow = median_ci(xs, 0.99), median_ci(xs, 0.80)
    assert wide is not None and narrow is not None
    assert narrow[0] > wide[0] and narrow[1] < wide[1]
    assert median_ci(xs[:3], 0.5) == (0.0, 2.0)  # n=3, ranks (1, 3): coverage 1 - 2/8 = 0.75


def test_median_ci_relative_half_width() -> None:
    # n=9: CI (x(2), x(8)) = (2, 8) of 1..9, half-width 3, median 5 -> 0.6
    assert median_ci_rel_half_width([float(i) for i in range(1, 10)]) == pytest.approx(0.6)
    assert median_ci_rel_half_width([2.0] * 6) == 0.0
    assert median_ci_rel_half_width([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # n < 6: no CI
    assert median_ci_rel_half_width([-1.0, 0.0, 0.0, 0.0, 0.0, 1.0]) is None  # median 0
    # symmetric about a negative median: relative to |median|
    assert median_ci_rel_half_width([-4.0, -3.0, -2.0, -2.0, -1.0, 0.0]) == pytest.approx(1.0)


def test_median_ci_rank_cache_matches_direct_search() -> None:
    from tasks.instruments.stats import _binomial_half_cdf

    for n in range(1, 60):
        xs = [float(i) for i in range(n)]
        ks = [k for k in range(1, n // 2 + 1) if 1 - 2 * _binomial_half_cdf(k - 1, n) >= 0.95]
        expected = (xs[max(ks) - 1], xs[n - max(ks)]) if ks else None
        assert median_ci(xs) == expected, n


def test_paired_ratios() -> None:
    assert paired_ratios([2.0, 3.0, 9.0], [1.0, 2.0, 3.0]) == [2.0, 1.5, 3.0]
    with pytest.raises(ValueError):
        paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratios([1.0], [0.0])


def test_summarize_exact() -> None:
    s = summarize(SAMPLE)
    assert isinstance(s, Summary)
    assert (s.n, s.median, s.mean, s.min, s.max) == (8, 3.5, 3.875, 1.0, 9.0)
    assert (s.q25, s.q75, s.iqr) == (1.75, 5.25, 3.5)
    assert s.p90 == pytest.approx(6.9)
    assert s.p99 is None  # fewer than 100 samples
    assert (s.ci_low, s.ci_high) == (1.0, 9.0)
    assert s.noisy  # 3.5 / 3.5 = 1.0 > 0.10
    assert s.to_dict()["median"] == 3.5


def test_summarize_quiet_and_p99() -> None:
    xs = [100.0 + (i % 10) * 0.1 for i in range(100)]  # spread 0.9 around 100
    s = summarize(xs)
    assert not s.noisy
    assert s.p99 is not None and s.p99 == pytest.approx(quantile(xs, 0.99))
    assert summarize([1.0] * 5).ci_low is None


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, math.nan])
    with pytest.raises(ValueError):
        summarize([1.0, math.inf])


@pytest.mark.parametrize(
    ("df", "expected"),  # scipy.stats.t.ppf(0.975, df)
    [(1, 12.7062), (2, 4.30265), (4, 2.77645), (10, 2.22814), (30, 2.04227), (1000, 1.96234)],
)
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-4)


def test_mean_ci() -> None:
    mean, low, high = mean_ci([1.0, 2.0, 3.0])  # type: ignore[misc]
    # s = 1, t_{0.975, 2} = 4.302653, half-width = 4.302653 / sqrt(3) = 2.484138
    assert mean == 2.0
    assert low == pytest.approx(2.0 - 2.484138, rel=1e-5)
    assert high == pytest.approx(2.0 + 2.484138, rel=1e-5)
    assert mean_ci([5.0]) is None
    assert mean_ci([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)


def test_loglog_slope() -> None:
    xs = [128.0, 256.0, 512.0, 1024.0]
    assert loglog_slope(xs, [3.0 * x**2 for x in xs]) == pytest.approx(2.0)
    assert loglog_slope(xs, [0.5 * x for x in xs]) == pytest.approx(1.0)
    assert loglog_slope([1.0, 10.0], [5.0, 5.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        loglog_slope([1.0], [1.0])
    with pytest.raises(ValueError):
        loglog_slope([1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError):
        loglog_slope([2.0, 2.0], [1.0, 3.0])
