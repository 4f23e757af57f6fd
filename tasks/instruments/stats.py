"""Pure statistics over tuples of samples (after asv's ``statistics.py``).

Every function is a pure function of its arguments, names its method in a comment and
is tested on small exact samples. Pure Python: no numpy or scipy, so every cell process can
import it cheaply for its timing, and its results do not move with library versions. The
interval of a mean over seeds, which needs a t quantile, is ``harness.seeds`` (scipy).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NOISY_IQR_OVER_MEDIAN = 0.10  # docs/METHOD.md, Latency: flag a measurement as noisy above this
MIN_SAMPLES_FOR_P99 = 100  # fewer than 100 samples cannot resolve the 99th percentile


def finite_sorted(samples: Sequence[float]) -> list[float]:
    values = [float(x) for x in samples]
    if not values:
        raise ValueError("no samples")
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"non-finite sample in {values!r}")
    return sorted(values)


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile, 0 <= q <= 1, of ``samples``.

    Method: linear interpolation between order statistics, Hyndman & Fan (1996) type 7,
    numpy's default ``method="linear"``: with h = (n - 1) q over sorted x,
    x[floor h] + frac(h) (x[floor h + 1] - x[floor h]).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must lie in [0, 1], got {q}")
    xs = finite_sorted(samples)
    h = (len(xs) - 1) * q
    lo = math.floor(h)
    if lo + 1 >= len(xs):
        return xs[-1]
    return xs[lo] + (h - lo) * (xs[lo + 1] - xs[lo])


def _binomial_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact in integers before the one division."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@functools.lru_cache(maxsize=1024)
def _median_ci_rank(n: int, confidence: float) -> int | None:
    """Largest k with 1 - 2 P(B <= k - 1) >= confidence, B ~ Binomial(n, 1/2); None if none."""
    best: int | None = None
    for k in range(1, n // 2 + 1):
        if 1.0 - 2.0 * _binomial_half_cdf(k - 1, n) >= confidence:
            best = k
        else:
            break
    return best


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median, or None when n is too small.

    Method: order-statistic interval. With sorted x(1) <= ... <= x(n), the interval
    [x(k), x(n+1-k)] covers the population median with probability
    1 - 2 P(B <= k - 1), B ~ Binomial(n, 1/2), for any continuous distribution
    (Conover, Practical Nonparametric Statistics, 3rd ed., sec. 3.2). We take the largest k
    (the narrowest symmetric rank pair) whose coverage is still >= ``confidence``.
    At 95% the smallest n that reaches it is 6 (k = 1, coverage 1 - 2/64 = 0.969).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    xs = finite_sorted(samples)
    best = _median_ci_rank(len(xs), confidence)
    if best is None:
        return None
    return xs[best - 1], xs[len(xs) - best]


def median_ci_rel_half_width(samples: Sequence[float],
                             confidence: float = 0.95) -> float | None:
    """Half-width of ``median_ci``, (hi - lo) / 2, over |median|: the adaptive sampler's stop
    figure (``timing``). None when the CI does not exist (n < 6 at 95%) or the median
    is 0 (a relative width is undefined)."""
    ci = median_ci(samples, confidence)
    median = quantile(samples, 0.5)
    if ci is None or median == 0.0:
        return None
    return (ci[1] - ci[0]) / 2.0 / abs(median)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Element-wise a_i / b_i of two equally long sample sequences taken in pairs (a round of
    the workload and a round of the reference); raises on unequal lengths or b_i <= 0."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired samples differ in length: {len(numerators)} != "
                         f"{len(denominators)}")
    if any(not (math.isfinite(b) and b > 0) for b in denominators):
        raise ValueError("paired_ratios needs finite positive denominators")
    return [float(a) / float(b) for a, b in zip(numerators, denominators, strict=True)]


@dataclass(frozen=True)
class Summary:
    """Robust summary of one measurement's samples (units are those of the samples)."""

    n: int
    median: float
    mean: float
    min: float
    max: float
    q25: float
    q75: float
    iqr: float
    p90: float
    p99: float | None  # None unless n >= MIN_SAMPLES_FOR_P99
    ci_low: float | None  # order-statistic 95% CI of the median; None when n < 6
    ci_high: float | None
    noisy: bool  # iqr / median > NOISY_IQR_OVER_MEDIAN

    def to_dict(self) -> dict[str, float | int | bool | None]:
        return asdict(self)


def _is_noisy(iqr: float, median: float) -> bool:
    if median == 0.0:
        return iqr > 0.0  # relative spread is undefined; any spread around zero counts
    return iqr / abs(median) > NOISY_IQR_OVER_MEDIAN


def summarize(samples: Sequence[float]) -> Summary:
    """Median, IQR, p90, p99 (n >= 100 only), 95% CI of the median and the noisy flag.

    Quantiles are type 7 (``quantile``); the CI is ``median_ci`` at 95%.
    Raises ValueError on empty or non-finite samples.
    """
    xs = finite_sorted(samples)
    q25, median, q75 = quantile(xs, 0.25), quantile(xs, 0.5), quantile(xs, 0.75)
    ci = median_ci(xs, 0.95)
    return Summary(
        n=len(xs),
        median=median,
        mean=math.fsum(xs) / len(xs),
        min=xs[0],
        max=xs[-1],
        q25=q25,
        q75=q75,
        iqr=q75 - q25,
        p90=quantile(xs, 0.90),
        p99=quantile(xs, 0.99) if len(xs) >= MIN_SAMPLES_FOR_P99 else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        noisy=_is_noisy(q75 - q25, median),
    )


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Scaling exponent: ordinary least-squares slope of log(y) on log(x).

    y = c x^k gives exactly k. Needs >= 2 points, all positive, with at least two distinct x.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} != {len(ys)}")
    if len(xs) < 2:
        raise ValueError("loglog_slope needs at least 2 points")
    if any(not (math.isfinite(v) and v > 0) for v in (*xs, *ys)):
        raise ValueError("loglog_slope needs finite positive xs and ys")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = math.fsum(lx) / len(lx), math.fsum(ly) / len(ly)
    sxx = math.fsum((a - mx) ** 2 for a in lx)
    if sxx == 0.0:
        raise ValueError("loglog_slope needs at least two distinct x values")
    return math.fsum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx
