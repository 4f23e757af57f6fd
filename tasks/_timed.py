"""Shared shaping of timed samples into latency and throughput metrics."""

from __future__ import annotations

from typing import Any

from harness.stats import summarize
from tasks.base import Metric

MS = 1e3


def latency_metrics(
    timing: Any, tokens_per_call: int, extra: dict[str, Any], name: str = "latency_ms"
) -> list[Metric]:
    """Median latency (ms per call) with IQR, CI and raw samples, plus tokens per second."""
    samples_ms = [s * MS for s in timing.samples_s]
    summ = summarize(samples_ms)
    info = {**extra, "iters_per_sample": timing.iters, "warmup": timing.warmup,
            "noisy": summ.noisy}
    latency = Metric(
        name=name, unit="ms", value=summ.median, higher_is_better=False,
        method=timing.method, n_samples=summ.n, spread=summ.iqr, spread_kind="iqr",
        summary=summ.to_dict(), samples=samples_ms, extra=info,
    )
    rate = [tokens_per_call / (s / MS) for s in samples_ms]
    rate_summ = summarize(rate)
    throughput = Metric(
        name="tokens_per_s", unit="tokens/s", value=rate_summ.median, higher_is_better=True,
        method=f"{tokens_per_call} tokens / per-call latency; " + timing.method,
        n_samples=rate_summ.n, spread=rate_summ.iqr, spread_kind="iqr",
        summary=rate_summ.to_dict(), extra=info,
    )
    return [latency, throughput]
