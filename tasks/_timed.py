"""Shared shaping of timed samples into latency, throughput and reference-normalised metrics.

Every metric carries the same ``extra`` keys about how the samples were taken
(``tasks.instruments.timing``): ``noisy``, ``contended``, ``contention``, ``ref_ms``, ``ref_ratio``,
``ref_method``, ``ci_target``, ``ci_met`` (plus ``iters_per_sample``, ``warmup``, ``n_min``,
``attempts``). Tasks that time with ``time_fn`` declare ``LATENCY_SPECS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.base import Metric, MetricSpec
from tasks.instruments.stats import paired_ratios, quantile, summarize
from tasks.instruments.timing import (
    CI_TARGET,
    MAX_ATTEMPTS,
    MAX_SAMPLES,
    PROCESSES,
    Timing,
    time_fn,
)

if TYPE_CHECKING:
    from tasks.instruments.context import CellContext

MS = 1e3

LATENCY = MetricSpec("latency_ms", "ms", False,
                     "median wall-clock latency of one call (ms), IQR and 95% CI of the median",
                     swept=True)
TOKENS_PER_S = MetricSpec("tokens_per_s", "tokens/s", True,
                          "tokens per call / per-call latency, median over samples")
LATENCY_VS_REF = MetricSpec(
    "latency_vs_ref", "x reference", False,
    "median latency / median latency of a fixed reference matmul timed in the same rounds: "
    "comparable across processes and load (spread from per-round ratios)", swept=True)
LATENCY_SPECS = (LATENCY, TOKENS_PER_S, LATENCY_VS_REF)

VS_REF_METHOD = (
    "median(workload samples) / median(reference samples): the reference ({ref}) and the "
    "workload are timed alternately in the same rounds (workload sample, reference sample, "
    "...), so machine-wide slowdowns hit both and divide out; spread (IQR), CI and samples are "
    "of the per-round ratios workload_i / reference_i (summary.median is their median)")


def timing_info(timing: Any, noisy: bool) -> dict[str, Any]:
    """The ``extra`` keys every timed metric carries (see the module doc)."""
    ref_s = list(getattr(timing, "ref_samples_s", ()) or ())
    ref_ms = quantile(ref_s, 0.5) * MS if ref_s else None
    median_ms = quantile(timing.samples_s, 0.5) * MS
    return {
        "iters_per_sample": timing.iters, "warmup": timing.warmup, "noisy": noisy,
        "contended": getattr(timing, "contended", None),
        "contention": getattr(timing, "contention", None),
        "ref_ms": ref_ms,
        "ref_ratio": median_ms / ref_ms if ref_ms else None,
        "ref_method": getattr(timing, "ref_method", None),
        "ci_target": getattr(timing, "ci_target", None),
        "ci_met": getattr(timing, "ci_met", None),
        "n_min": timing.n_requested,
        "attempts": getattr(timing, "attempts", 1),
    }


def latency_metrics(
    timing: Any, tokens_per_call: int, extra: dict[str, Any], name: str = "latency_ms"
) -> list[Metric]:
    """Median latency (ms per call) with IQR, CI and raw samples, tokens per second, and the
    latency in multiples of the interleaved reference (``latency_vs_ref``)."""
    samples_ms = [s * MS for s in timing.samples_s]
    summ = summarize(samples_ms)
    info = {**extra, **timing_info(timing, summ.noisy)}
    latency = Metric(
        name=name, unit="ms", value=summ.median, higher_is_better=False,
        method=timing.method, n_samples=summ.n, spread=summ.iqr, spread_kind="iqr",
        summary=summ.to_dict(), samples=samples_ms, extra=info,
    )
    rate = [tokens_per_call / (s / MS) for s in samples_ms]
    rate_summ = summarize(rate)
    throughput = TOKENS_PER_S.metric(
        rate_summ.median, method=f"{tokens_per_call} tokens / per-call latency; " + timing.method,
        n_samples=rate_summ.n, spread=rate_summ.iqr, spread_kind="iqr",
        summary=rate_summ.to_dict(), extra=info,
    )
    return [latency, throughput, vs_reference_metric(timing, info)]


def vs_reference_metric(timing: Any, info: dict[str, Any]) -> Metric:
    """``latency_vs_ref``: ratio of medians, spread and CI from the per-round ratios;
    ``unavailable`` (with the reason) when no reference was timed."""
    ref_s = list(getattr(timing, "ref_samples_s", ()) or ())
    if not ref_s:
        return LATENCY_VS_REF.metric(
            None, status="unavailable",
            error="no reference workload was timed (time_fn reference=None)", extra=info)
    ratios = paired_ratios(timing.samples_s, ref_s)
    summ = summarize(ratios)
    value = quantile(timing.samples_s, 0.5) / quantile(ref_s, 0.5)
    return LATENCY_VS_REF.metric(
        value, method=VS_REF_METHOD.format(ref=info.get("ref_method")),
        n_samples=summ.n, spread=summ.iqr, spread_kind="iqr", summary=summ.to_dict(),
        samples=ratios,
        extra={**info, "noisy": summ.noisy, "ref_samples_ms": [s * MS for s in ref_s]},
    )


@dataclass(frozen=True)
class TimingConfig:
    """The timing settings of every timed task's config (``tasks.instruments.timing``).

    The fields here share their defaults. A subclass declares its own fields, then its
    sampling budget with its own defaults: ``n_samples`` (timed samples, each the mean of
    calibrated iterations), ``warmup``, ``min_sample_s`` (one sample lasts at least this long)
    and ``max_total_s`` (stop sampling after this much timing). Those stay in the subclass
    because a resolved config's keys, in ``dataclasses.asdict`` order, are hashed into a
    cell's id: fields declared here come first.
    """

    ci_target: float = CI_TARGET  # sample until the median's 95% CI is within this; 0: off
    max_samples: int = MAX_SAMPLES  # adaptive sampling stops here at the latest
    max_attempts: int = MAX_ATTEMPTS  # 1: never re-measure a contended measurement
    processes: int = PROCESSES  # fresh processes measured one after another, samples pooled

    def validate(self) -> None:
        check_timing(self)

    def time(self, fn: Callable[[], object], ctx: CellContext) -> Timing:
        """``fn`` timed with these settings on the cell's device (:func:`time_fn`)."""
        cfg: Any = self  # the sampling budget is declared by the subclass (see above)
        return time_fn(fn, sync=ctx.sync, warmup=cfg.warmup, min_sample_s=cfg.min_sample_s,
                       n_samples=cfg.n_samples, max_total_s=cfg.max_total_s,
                       ci_target=cfg.ci_target, max_samples=cfg.max_samples,
                       max_attempts=cfg.max_attempts, device=ctx.device)


def check_timing(cfg: Any) -> None:
    """Ranges shared by every timed task's config (one line each, naming the field)."""
    if cfg.warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {cfg.warmup}")
    if not cfg.min_sample_s > 0:
        raise ValueError(f"min_sample_s must be > 0 seconds, got {cfg.min_sample_s}")
    if not cfg.max_total_s > 0:
        raise ValueError(f"max_total_s must be > 0 seconds, got {cfg.max_total_s}")
    if cfg.n_samples < 1 or cfg.max_samples < 1 or cfg.max_attempts < 1:
        raise ValueError("n_samples, max_samples and max_attempts must be >= 1")
    if not 1 <= cfg.processes <= 100:
        raise ValueError(f"processes must be in [1, 100], got {cfg.processes}")
    if cfg.ci_target < 0:
        raise ValueError(f"ci_target must be >= 0 (0: off), got {cfg.ci_target}")
