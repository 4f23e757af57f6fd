"""Wall-clock timing of a callable: warm up, calibrate iterations, then sample.

After nanoGPT's ``bench.py`` and ``torch.utils.benchmark``: synchronize the device before
every clock read, burn in, calibrate the number of calls per sample so a sample lasts long
enough to read, and keep every sample (statistics are applied later, see ``stats``).
Importing this module does not import torch; ``sync_for`` imports it only for CUDA.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

METHOD = "perf_counter_ns, sync before each clock read, calibrated iterations"
MIN_SAMPLES = 5  # an early stop on max_total_s still collects this many when it can
_MAX_CALIBRATION_ROUNDS = 20


def _no_sync() -> None:
    return None


@dataclass(frozen=True)
class Timing:
    """Per-call latency samples in seconds; each sample is the mean over ``iters`` calls."""

    samples_s: tuple[float, ...]
    iters: int  # calls per sample, calibrated so a sample lasts >= min_sample_s
    warmup: int  # untimed calls before calibration
    n_requested: int  # samples asked for; len(samples_s) is fewer when stopped_early
    stopped_early: bool  # max_total_s ran out before n_requested samples
    total_s: float  # wall time of the whole measurement, warm-up and calibration included
    method: str = METHOD

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["samples_s"] = list(self.samples_s)
        return d


def _timed_block(fn: Callable[[], object], iters: int, sync: Callable[[], None]) -> int:
    """Nanoseconds for ``iters`` calls of ``fn``, the device synchronized at both clock reads."""
    sync()
    t0 = time.perf_counter_ns()
    for _ in range(iters):
        fn()
    sync()
    return time.perf_counter_ns() - t0


def calibrate_iters(
    fn: Callable[[], object], sync: Callable[[], None], min_sample_s: float
) -> int:
    """Smallest-ish call count whose block lasts >= ``min_sample_s``.

    Grows the count from 1 by the measured shortfall (x1.2 headroom, at most x100 a round),
    re-timing until one block reaches the target, as ``torch.utils.benchmark``'s autorange does.
    """
    target_ns = min_sample_s * 1e9
    iters = 1
    for _ in range(_MAX_CALIBRATION_ROUNDS):
        elapsed_ns = _timed_block(fn, iters, sync)
        if elapsed_ns >= target_ns:
            return iters
        growth = target_ns / max(elapsed_ns, 1) * 1.2
        iters = max(iters + 1, math.ceil(iters * min(growth, 100.0)))
    return iters


def time_fn(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] = _no_sync,
    warmup: int = 3,
    min_sample_s: float = 0.01,
    n_samples: int = 15,
    max_total_s: float = 20.0,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, calibration, then up to ``n_samples`` samples.

    ``sync`` is called before every clock read (pass ``torch.cuda.synchronize`` on CUDA, or
    use ``sync_for(device)``). Sampling stops early once ``max_total_s`` (counted from the
    start of warm-up) is exceeded, but not before ``min(MIN_SAMPLES, n_samples)`` samples.
    """
    if n_samples < 1 or warmup < 0 or min_sample_s < 0 or max_total_s <= 0:
        raise ValueError("need n_samples >= 1, warmup >= 0, min_sample_s >= 0, max_total_s > 0")
    start = time.monotonic()  # budget clock; perf_counter_ns is kept for synced measurement reads
    for _ in range(warmup):
        fn()
    iters = calibrate_iters(fn, sync, min_sample_s)
    floor = min(MIN_SAMPLES, n_samples)
    samples: list[float] = []
    while len(samples) < n_samples:
        samples.append(_timed_block(fn, iters, sync) / iters / 1e9)
        over_budget = time.monotonic() - start > max_total_s
        if over_budget and len(samples) >= floor:
            break
    return Timing(
        samples_s=tuple(samples),
        iters=iters,
        warmup=warmup,
        n_requested=n_samples,
        stopped_early=len(samples) < n_samples,
        total_s=time.monotonic() - start,
    )


def sync_for(device: str) -> Callable[[], None]:
    """The synchronize function to pass as ``sync``: ``torch.cuda.synchronize`` for CUDA
    devices (bound to that device), a no-op for CPU, where kernels run synchronously."""
    if device.startswith("cuda"):
        import torch  # lazy: CPU-only callers never pay for, or need, torch here

        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return _no_sync
