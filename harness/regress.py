"""Regression detection: did the newest run of a series change against its history?

A *series* is one machine x variant x config x task x metric, measured once a night. Each run
gives either raw timing samples (``kind="samples"``: 30-100 latency samples, lower is better)
or one value per seed (``kind="seeds"``: 1-5 accuracies, higher is better). ``compare`` takes
the newest run and the series' earlier runs (oldest first) and returns a :class:`Verdict`;
``confirm`` says whether a re-measurement agrees with a first suspicion. Pure functions: no
database, no clock, no randomness. The method, with the false-alarm rate we simulated, is
written up in ``docs/regressions.md``.

Method, in one paragraph. Two conditions must both hold before a change is reported:

1. *significance*: p < ``alpha`` from Mann-Whitney U (two-sided, new raw samples vs the pooled
   samples of the last ``window`` runs; centers are medians) for samples, or from Welch's
   t-test (centers are means) for seeds;
2. *effect*: |rel_change| > ``threshold``, with rel_change = (new_center - base_center) /
   |base_center| and threshold = max(``min_effect``, ``noise_k`` x noise). ``noise`` is the
   run-to-run relative noise of the series: 1.4826 x MAD of the per-run centers over their
   median (a robust standard deviation), learned when the history has >= 3 runs. With fewer,
   noise is None and the threshold is the conservative max(min_effect, 2 x min_effect).

The effect rule is needed because samples within one run are correlated (a process or machine
offset shifts a whole run): with 100 samples a side, U finds a 1% run-to-run wobble
"significant", so significance alone would fire every night. The effect rule is *relative*
for both kinds, accuracies included (one rule, one meaning of ``threshold``); a series whose
baseline center is 0 has no relative change and is "insufficient".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

CHANGES = ("regression", "improvement", "changed", "none", "insufficient")
CONFIDENCES = ("high", "medium", "low")
KINDS = ("samples", "seeds")

MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD x this estimates the SD of a normal distribution
MIN_SAMPLES = 5  # fewer raw samples than this on either side: "insufficient"
MIN_NEW_SEEDS = 1  # seeds: the new run needs one finite value ...
MIN_BASE_SEEDS = 2  # ... and the baseline two (a spread for the t-interval)
MIN_NOISE_RUNS = 3  # history runs needed to learn the run-to-run noise
WELCH_MIN = 3  # seeds: Welch's t-test when both sides have at least this many values
DEFAULT_NOISE_FACTOR = 2.0  # without learned noise: threshold = max(min_effect, 2 x min_effect)


@dataclass(frozen=True)
class Verdict:
    """What ``compare`` decided for one series; every float is finite or None."""

    change: str  # one of CHANGES
    rel_change: float | None  # (new_center - base_center) / |base_center|, signed
    p_value: float | None
    threshold: float  # the relative effect a change must exceed (learned from noise)
    noise: float | None  # run-to-run relative noise of the series (None: too little history)
    base_center: float | None
    new_center: float | None
    n_base: int  # finite samples (or seed values) on each side
    n_new: int
    n_history_runs: int  # history runs used (non-empty after cleaning, at most ``window``)
    method: str  # one line: the test, the baseline, the threshold rule and its inputs
    confidence: str  # one of CONFIDENCES
    n_dropped: int = 0  # NaN/inf/None/non-numeric values ignored (new run and used history)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict of every field."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Cleaning


def _as_float(x: Any) -> float | None:
    """``x`` as a finite float, or None (NaN, inf, None, bool, strings and other junk)."""
    if isinstance(x, (bool, str, bytes)) or x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _values(run: Any) -> list[Any]:
    """The raw entries of one run; a bare number counts as a one-value run, junk as empty."""
    if run is None:
        return []
    if isinstance(run, (str, bytes)) or not isinstance(run, Iterable):
        return [run]
    try:
        return list(run)
    except TypeError:
        return []


def _clean(run: Any) -> tuple[list[float], int]:
    """(finite float values of ``run``, how many entries were dropped)."""
    raw = _values(run)
    kept = [v for v in (_as_float(x) for x in raw) if v is not None]
    return kept, len(raw) - len(kept)


def _clean_history(history: Any, window: int) -> tuple[list[list[float]], int]:
    """The last ``window`` runs that keep a finite value, oldest first, and the entries
    dropped from those runs. Runs with no finite value (failed nights) do not count."""
    runs: list[tuple[list[float], int]] = []
    for run in _values(history):
        kept, dropped = _clean(run)
        if kept:
            runs.append((kept, dropped))
    used = runs[-window:]
    return [kept for kept, _ in used], sum(dropped for _, dropped in used)


# ---------------------------------------------------------------------------------------------
# Statistics


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> float:
    """``fn(*args, **kwargs)`` as a float, with numpy's and scipy's warnings (overflow,
    precision loss on constant data) silenced: their outcome is checked for finiteness."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(fn(*args, **kwargs))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _center(values: Sequence[float], kind: str) -> float:
    """Median of raw samples, mean of seed values (inf when the values overflow)."""
    return _quiet(np.median if kind == "samples" else np.mean, values)


def run_noise(runs: Sequence[Sequence[float]], kind: str = "samples") -> float | None:
    """Run-to-run relative noise: 1.4826 x MAD of the per-run centers / |their median|.

    None with fewer than 3 runs or a zero median of centers. Robust: one odd night among ten
    does not move it.
    """
    if len(runs) < MIN_NOISE_RUNS:
        return None
    centers = np.array([_center(run, kind) for run in runs])
    mid = _quiet(np.median, centers)
    if mid == 0.0 or not math.isfinite(mid):
        return None
    noise = MAD_TO_SD * _quiet(lambda: np.median(np.abs(centers - mid))) / abs(mid)
    return noise if math.isfinite(noise) else None


def effect_threshold(noise: float | None, min_effect: float, noise_k: float) -> float:
    """max(min_effect, noise_k x noise); without a learned noise, max(min_effect, 2 x
    min_effect): conservative, because a short history says nothing about the noise."""
    if noise is None:
        return max(min_effect, DEFAULT_NOISE_FACTOR * min_effect)
    return max(min_effect, noise_k * noise)


def _finite_p(p: float, new_center: float, base_center: float) -> float:
    """A test's p-value, with the degenerate NaN (no spread on either side) resolved:
    1.0 when the centers agree, 0.0 when they differ (two constants that are not equal)."""
    p = float(p)
    if math.isfinite(p):
        return min(max(p, 0.0), 1.0)
    return 1.0 if new_center == base_center else 0.0


def _mann_whitney(new: Sequence[float], base: Sequence[float]) -> float:
    return _quiet(lambda: stats.mannwhitneyu(new, base, alternative="two-sided").pvalue)


def _welch(new: Sequence[float], base: Sequence[float]) -> float:
    return _quiet(lambda: stats.ttest_ind(new, base, equal_var=False).pvalue)


def _one_sample_t(new_mean: float, base: Sequence[float]) -> float:
    """p of the new mean against the baseline mean's t-distribution (df = n_base - 1): the
    new mean lies outside the baseline's 95% t-interval exactly when p < 0.05."""
    return _quiet(lambda: stats.ttest_1samp(base, popmean=new_mean).pvalue)


# ---------------------------------------------------------------------------------------------
# Decision


def _run_test(kind: str, new: Sequence[float], base: Sequence[float], n_runs: int,
              new_center: float, base_center: float) -> tuple[float, str, bool]:
    """(p-value, one-line description, whether a two-sample test was used) for ``kind``:
    Mann-Whitney U on samples; Welch's t on seeds with >= 3 values a side, else one-sample t."""
    if kind == "samples":
        p = _mann_whitney(new, base)
        text = (f"Mann-Whitney U (two-sided) on {len(new)} raw samples vs the last {n_runs} "
                f"run(s) pooled ({len(base)}), medians")
        return _finite_p(p, new_center, base_center), text, True
    if len(new) >= WELCH_MIN and len(base) >= WELCH_MIN:
        p = _welch(new, base)
        text = (f"Welch's t-test on {len(new)} seed values vs {len(base)} from the last "
                f"{n_runs} run(s), means")
        return _finite_p(p, new_center, base_center), text, True
    p = _one_sample_t(new_center, base)
    text = (f"new mean of {len(new)} seed value(s) vs the 95% t-interval of the mean of "
            f"{len(base)} baseline values from {n_runs} run(s) (one-sample t)")
    return _finite_p(p, new_center, base_center), text, False


def _direction(rel_change: float, higher_is_better: bool | None) -> str:
    """'changed' without a direction; otherwise 'regression' when the metric moved the bad
    way (up for lower-is-better, down for higher-is-better), else 'improvement'."""
    if higher_is_better is None:
        return "changed"
    worse = rel_change < 0 if higher_is_better else rel_change > 0
    return "regression" if worse else "improvement"


def _confidence(fired: bool, p: float, rel: float, threshold: float, alpha: float,
                noise_known: bool, exact_test: bool) -> str:
    """'high': fired with p < alpha/10 and |rel| > 2 x threshold; 'medium': fired; both need
    learned noise (>= 3 history runs) and, for seeds, the two-sample test. 'low' otherwise
    (a 'none' verdict included: confidence grades a reported change)."""
    if not (fired and noise_known and exact_test):
        return "low"
    if p < alpha / 10 and abs(rel) > 2 * threshold:
        return "high"
    return "medium"


def _threshold_text(noise: float | None, min_effect: float, noise_k: float) -> str:
    if noise is None:
        return (f"effect > max({min_effect:.0%}, {DEFAULT_NOISE_FACTOR:g} x {min_effect:.0%}) "
                f"(noise unknown: < {MIN_NOISE_RUNS} history runs)")
    return (f"effect > max({min_effect:.0%}, {noise_k:g} x run-to-run MAD noise "
            f"{noise:.2%}) = {effect_threshold(noise, min_effect, noise_k):.2%}")


def _validate(kind: str, alpha: float, min_effect: float, noise_k: float, window: int) -> None:
    """Reject programming errors (bad parameters); bad *data* never raises."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if min_effect < 0 or noise_k < 0:
        raise ValueError(f"min_effect and noise_k must be >= 0, got {min_effect}, {noise_k}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")


def compare(new: Sequence[float], history: Sequence[Sequence[float]],
            higher_is_better: bool | None, *, kind: str = "samples", alpha: float = 0.01,
            min_effect: float = 0.05, noise_k: float = 3.0, window: int = 10) -> Verdict:
    """Compare the newest run of a series with its last ``window`` runs.

    ``new``: the newest run's raw samples (``kind="samples"``) or per-seed values
    (``kind="seeds"``). ``history``: earlier runs, oldest first, one list per run. NaN, inf,
    None and non-numeric entries are ignored and counted in ``n_dropped``; runs left empty
    are skipped before the window is taken.

    samples: Mann-Whitney U (two-sided) of the new samples against the pooled baseline
    samples; centers are medians; "insufficient" with < 5 finite samples on either side.

    seeds: centers are means. With >= 3 values on both sides, Welch's t-test; otherwise the
    new mean is tested against the baseline values' mean with a one-sample t-test (the 95%
    t-interval of the baseline mean; df = n_base - 1) and confidence is "low".
    "insufficient" with no finite new value or < 2 baseline values.

    Both kinds report a change only when p < ``alpha`` AND |rel_change| > threshold =
    max(``min_effect``, ``noise_k`` x noise); the effect rule is relative for both kinds
    (accuracy too). noise: 1.4826 x MAD of the per-run centers over their median, learned
    from >= 3 history runs; with fewer, noise is None, threshold = max(min_effect, 2 x
    min_effect) and confidence "low". A zero baseline center (no relative change) gives
    "insufficient".

    change: "regression"/"improvement" by ``higher_is_better``; "changed" when it is None;
    "none" when the rule does not fire. confidence: "high" when p < alpha/10 and
    |rel_change| > 2 x threshold, "medium" when the rule fires, both with >= 3 history runs
    (and the two-sample test for seeds); "low" otherwise.
    """
    _validate(kind, alpha, min_effect, noise_k, window)
    new_values, dropped_new = _clean(new)
    runs, dropped_hist = _clean_history(history, window)
    base = [v for run in runs for v in run]
    noise = run_noise(runs, kind)
    threshold = effect_threshold(noise, min_effect, noise_k)
    base_center = _finite_or_none(_center(base, kind)) if base else None
    new_center = _finite_or_none(_center(new_values, kind)) if new_values else None

    dropped = dropped_new + dropped_hist

    def verdict(change: str, method: str, *, rel: float | None = None, p: float | None = None,
                confidence: str = "low") -> Verdict:
        return Verdict(change=change, rel_change=rel, p_value=p, threshold=threshold,
                       noise=noise, base_center=base_center, new_center=new_center,
                       n_base=len(base), n_new=len(new_values), n_history_runs=len(runs),
                       method=method, confidence=confidence,
                       n_dropped=dropped)

    dropped_text = f"; ignored {dropped} non-finite value(s)" if dropped else ""
    need_new, need_base = (MIN_SAMPLES, MIN_SAMPLES) if kind == "samples" else (
        MIN_NEW_SEEDS, MIN_BASE_SEEDS)
    if len(new_values) < need_new or len(base) < need_base:
        return verdict("insufficient", f"insufficient data: {len(new_values)} new and "
                       f"{len(base)} baseline finite values from {len(runs)} run(s); need "
                       f">= {need_new} new and >= {need_base} baseline{dropped_text}")
    if base_center is None or new_center is None:
        return verdict("insufficient", "insufficient: centers overflow (values near the float "
                       f"limit){dropped_text}")
    if base_center == 0.0:
        return verdict("insufficient", "insufficient: baseline center is 0, relative change "
                       f"undefined{dropped_text}")
    rel = _quiet(lambda: (new_center - base_center) / abs(base_center))
    if not math.isfinite(rel):
        return verdict("insufficient", "insufficient: centers overflow (values near the float "
                       f"limit){dropped_text}")
    p, test, two_sample = _run_test(kind, new_values, base, len(runs), new_center, base_center)
    fired = p < alpha and abs(rel) > threshold
    method = (f"{test}; change if p < {alpha:g} and relative "
              f"{_threshold_text(noise, min_effect, noise_k)}{dropped_text}")
    change = _direction(rel, higher_is_better) if fired else "none"
    confidence = _confidence(fired, p, rel, threshold, alpha, noise is not None, two_sample)
    return verdict(change, method, rel=rel, p=p, confidence=confidence)


def confirm(first: Verdict, again: Verdict) -> bool:
    """True when a re-measurement (compared against the same history) repeats the change:
    both "regression", both "improvement", or both "changed" in the same sign of
    rel_change. "none" and "insufficient" never confirm."""
    if first.change != again.change:
        return False
    if first.change in ("regression", "improvement"):
        return True
    if first.change == "changed":
        a, b = first.rel_change, again.rel_change
        return a is not None and b is not None and (a > 0) == (b > 0)
    return False
