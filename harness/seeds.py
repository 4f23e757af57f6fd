"""Statistics over seeds: the Student t interval of a mean (docs/METHOD.md, Accuracy: a mean
with a 95% CI over >= 3 seeds).

Apart from ``instruments.stats`` (pure Python, imported by every cell process for its timing) so
that only the harness, which reports over seeds, pays for importing scipy; the t quantile is
scipy's (``scipy.special.stdtrit``, the inverse of the Student t CDF), not hand-written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.special import stdtrit

from tasks.instruments.stats import finite_sorted


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom, 0.5 <= p < 1."""
    if not 0.5 <= p < 1.0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1, got {p}")
    return float(stdtrit(df, p))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(mean, low, high): Student t interval mean +- t_{(1+c)/2, n-1} s / sqrt(n); None for n < 2.

    Used for per-seed accuracy (docs/METHOD.md, Accuracy: mean with a 95% CI over >= 3 seeds).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    xs = finite_sorted(values)
    n = len(xs)
    if n < 2:
        return None
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half
