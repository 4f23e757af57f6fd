"""Wall-clock timing of a callable that holds on a shared machine.

After nanoGPT's ``bench.py``, ``torch.utils.benchmark`` and ``timeit``:

1. **Blocks.** The device is synchronised before every clock read (``perf_counter_ns``); the
   number of calls per sample is calibrated so one sample lasts >= ``min_sample_s`` (as
   ``torch.utils.benchmark``'s autorange); the garbage collector is off inside each timed
   block and back on between blocks, as ``timeit`` (and so ``torch.utils.benchmark``) does,
   so a collection of unrelated objects never lands inside a sample. Every sample is kept.
2. **Reference, interleaved.** A fixed reference workload (``reference_for``: a seeded
   float32 square matmul on the same device, with the process's thread count) is warmed up
   and calibrated like the workload, then timed in the same rounds: workload sample, reference
   sample, workload sample, ... . ``median(workload) / median(reference)`` is a latency in
   units of "what this machine does right now", which divides out slowdowns that hit both
   (neighbours, clocks); per-round ratios give its spread.
3. **Adaptive sample count.** ``n_samples`` is the minimum: rounds go on until the
   distribution-free 95% CI of the workload's median (``stats.median_ci``) has a half-width
   (hi - lo) / 2 <= ``ci_target`` x median, or ``max_samples`` rounds, or ``max_total_s``.
4. **Contention.** A probe (``contention``) brackets each attempt; an attempt flagged
   contended is re-measured: up to ``max_attempts`` attempts in all, each further one only
   after ``wait_for_quiet`` saw one quiet window within ``quiet_wait_s`` (another attempt
   under the same load would not do better). The least contended attempt (lowest score,
   earliest on ties) is kept; every attempt's figures are stored.

Budget: ``max_total_s`` caps each attempt (warm-up, calibration and rounds), so a call takes
at most ``max_attempts * max_total_s + (max_attempts - 1) * quiet_wait_s`` plus one round.
Importing this module imports neither torch nor pynvml; they are imported when needed.
"""

from __future__ import annotations

import gc
import math
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tasks.instruments.contention import RULE, ContentionProbe
from tasks.instruments.procs import die_with_parent
from tasks.instruments.stats import median_ci_rel_half_width, quantile

METHOD = ("perf_counter_ns, sync before each clock read, calibrated iterations, "
          "gc off inside timed blocks")
METHOD_REF = "rounds interleave the workload with a fixed reference workload"
METHOD_ADAPTIVE = "samples until the 95% CI of the median is within {:.0%} of it"
METHOD_PROBE = "contention probed; contended attempts re-measured (tasks.instruments.contention)"
MIN_SAMPLES = 5  # an early stop on max_total_s still collects this many when it can
MAX_SAMPLES = 100  # adaptive sampling stops here at the latest (enough for a p99)
CI_TARGET = 0.02  # default: 95% CI half-width of the median within 2% of the median
MAX_ATTEMPTS = 3  # a contended measurement is re-measured up to 2 more times
# Each timed cell measures in this many fresh processes, one after another, and pools them:
# a process carries an offset of its own (memory layout, allocator state), measured at 7-19%
# between fresh processes here while repeats inside one agree within a few %. pyperf runs 20
# processes per benchmark and asv 2, for the same reason.
PROCESSES = 5
QUIET_WAIT_S = 3.0  # before a re-measure, wait at most this long for a quiet window
REF_SIZE_CPU = 256  # reference matmul edge on CPU: 33.6 MFLOP, cache-resident operands
REF_SIZE_CUDA = 2048  # on CUDA: 17 GFLOP, so the reference is not launch-bound
REF_WARMUP = 3
_MAX_CALIBRATION_ROUNDS = 20


def _no_sync() -> None:
    return None


class _CudaSync:
    """``torch.cuda.synchronize`` bound to one device; ``device`` lets ``time_fn`` find it."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = device
        self._dev = torch.device(device)
        self._sync = torch.cuda.synchronize

    def __call__(self) -> None:
        self._sync(self._dev)


@dataclass(frozen=True)
class Reference:
    """A fixed workload timed beside the measured one (see module doc, point 2)."""

    fn: Callable[[], object]
    sync: Callable[[], None]
    method: str


@dataclass(frozen=True)
class Timing:
    """Per-call latency samples in seconds; each sample is the mean over ``iters`` calls.

    The fields after ``method`` describe the reference, the adaptive stop and contention;
    they default to "not done" so a Timing built by older code stays valid.
    """

    samples_s: tuple[float, ...]
    iters: int  # calls per sample, calibrated so a sample lasts >= min_sample_s
    warmup: int  # untimed calls before calibration
    n_requested: int  # the minimum number of samples; fewer only when stopped_early
    stopped_early: bool  # max_total_s ran out before n_requested samples
    total_s: float  # wall time of the whole call: every attempt and wait included
    method: str = METHOD
    ref_samples_s: tuple[float, ...] = ()  # reference per-call latency, one per round
    ref_iters: int = 0
    ref_method: str | None = None
    ci_target: float | None = None  # None: adaptive sampling off
    ci_met: bool | None = None  # the final samples' CI meets ci_target (None: off or n < 6)
    max_samples: int | None = None
    contended: bool | None = None  # None: not probed, or the probe read none of its inputs
    contention: dict[str, Any] | None = None  # rule, every attempt's figures, the kept one
    attempts: int = 1

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["samples_s"] = list(self.samples_s)
        d["ref_samples_s"] = list(self.ref_samples_s)
        return d


def _timed_block(fn: Callable[[], object], iters: int, sync: Callable[[], None]) -> int:
    """Nanoseconds for ``iters`` calls of ``fn``, the device synchronized at both clock reads
    and the garbage collector disabled in between (restored afterwards, as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        t0 = time.perf_counter_ns()
        for _ in range(iters):
            fn()
        sync()
        return time.perf_counter_ns() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


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


def resolve_device(sync: Callable[[], None], device: str | None = None) -> str:
    """The device a workload runs on, for ``reference="auto"`` and the contention probe.

    In order: ``device`` if given; ``sync.device`` (``sync_for``'s CUDA sync); the ``device``
    of the object ``sync`` is bound to (``CellContext.sync``); "cpu" for the no-op sync;
    otherwise the current CUDA device if this process has initialised CUDA, else "cpu".
    """
    if device:
        return device
    found = getattr(sync, "device", None) or getattr(getattr(sync, "__self__", None),
                                                     "device", None)
    if found is not None:
        return str(found)
    if sync is _no_sync:
        return "cpu"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def threads_in_use(device: str) -> int:
    """CPU threads a measurement on ``device`` keeps busy: torch's intra-op threads on CPU,
    one launching thread on CUDA (1 when torch is not loaded)."""
    torch = sys.modules.get("torch")
    if device.startswith("cuda") or torch is None:
        return 1
    return int(torch.get_num_threads())


def reference_for(device: str) -> Reference:
    """The fixed reference: a seeded float32 ``n x n @ n x n`` into a preallocated output
    (``REF_SIZE_CPU`` on CPU, ``REF_SIZE_CUDA`` on CUDA), run with the process's threads."""
    import torch

    size = REF_SIZE_CUDA if device.startswith("cuda") else REF_SIZE_CPU
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device) for _ in range(2))
    out = torch.empty(size, size, device=device)
    where = f"{torch.get_num_threads()} threads"
    if device.startswith("cuda"):
        where += f", tf32 {torch.backends.cuda.matmul.allow_tf32}"
    return Reference(
        fn=lambda: torch.mm(a, b, out=out), sync=sync_for(device),
        method=f"{size}x{size} @ {size}x{size} float32 matmul on {device}, {where}, "
               "same process, interleaved round by round")


@dataclass
class _Attempt:
    samples_s: list[float]
    ref_samples_s: list[float]
    iters: int
    ref_iters: int
    ci_met: bool | None
    total_s: float


def _ci_met(samples: list[float], ci_target: float | None) -> bool | None:
    if not ci_target:
        return None
    rel = median_ci_rel_half_width(samples)
    return None if rel is None else rel <= ci_target


def _measure_once(fn: Callable[[], object], sync: Callable[[], None], ref: Reference | None, *,
                  warmup: int, min_sample_s: float, n_samples: int, max_samples: int,
                  ci_target: float | None, max_total_s: float) -> _Attempt:
    start = time.monotonic()  # budget clock; perf_counter_ns is kept for synced measurement reads
    for _ in range(warmup):
        fn()
    iters = calibrate_iters(fn, sync, min_sample_s)
    ref_iters = 0
    if ref is not None:
        for _ in range(REF_WARMUP):
            ref.fn()
        ref_iters = calibrate_iters(ref.fn, ref.sync, min_sample_s)
    floor = min(MIN_SAMPLES, n_samples)
    samples: list[float] = []
    ref_samples: list[float] = []
    while len(samples) < max_samples:
        samples.append(_timed_block(fn, iters, sync) / iters / 1e9)
        if ref is not None:
            ref_samples.append(_timed_block(ref.fn, ref_iters, ref.sync) / ref_iters / 1e9)
        n = len(samples)
        if n >= n_samples and (not ci_target or _ci_met(samples, ci_target)):
            break
        if time.monotonic() - start > max_total_s and n >= floor:
            break
    return _Attempt(samples, ref_samples, iters, ref_iters, _ci_met(samples, ci_target),
                    time.monotonic() - start)


def _is_auto(x: object) -> bool:
    return isinstance(x, str) and x == "auto"


def _attempt_summary(a: _Attempt, figures: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(figures or {})
    out.update(n=len(a.samples_s), median_ms=round(quantile(a.samples_s, 0.5) * 1e3, 6),
               total_s=round(a.total_s, 3), ci_met=a.ci_met)
    if a.ref_samples_s:
        ref_median = quantile(a.ref_samples_s, 0.5)
        out.update(ref_median_ms=round(ref_median * 1e3, 6),
                   ref_ratio=round(quantile(a.samples_s, 0.5) / ref_median, 6))
    return out


def time_fn(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] = _no_sync,
    warmup: int = 3,
    min_sample_s: float = 0.01,
    n_samples: int = 15,
    max_total_s: float = 20.0,
    reference: Reference | Callable[[], object] | str | None = "auto",
    ci_target: float | None = CI_TARGET,
    max_samples: int = MAX_SAMPLES,
    contention: Any = "auto",
    max_attempts: int = MAX_ATTEMPTS,
    quiet_wait_s: float = QUIET_WAIT_S,
    device: str | None = None,
) -> Timing:
    """Time ``fn()`` as the module doc describes; see there for the method.

    ``sync`` is called before every clock read (``sync_for(device)``, or ``CellContext.sync``).
    ``n_samples`` is the minimum number of samples: sampling goes on until ``ci_target`` is met
    (None or 0: stop at ``n_samples``) or ``max_samples`` (raised to ``n_samples`` if lower).
    An attempt stops once ``max_total_s`` (from the start of its warm-up) is exceeded, but not
    before ``min(MIN_SAMPLES, n_samples)`` samples. ``reference``: ``"auto"`` (the matmul of
    ``reference_for`` on the workload's device, which needs torch), a ``Reference``, a plain
    callable (timed with ``sync``), or None (no reference). ``contention``: ``"auto"`` (a
    ``ContentionProbe`` for the device and ``threads_in_use``), any object with ``start()``,
    ``stop(start) -> figures`` and ``wait_for_quiet(max_s) -> {"quiet": ...}``, or None
    (not probed; one attempt). ``device`` overrides ``resolve_device(sync)``.
    """
    if n_samples < 1 or warmup < 0 or min_sample_s < 0 or max_total_s <= 0 or max_attempts < 1:
        raise ValueError("need n_samples >= 1, warmup >= 0, min_sample_s >= 0, "
                         "max_total_s > 0, max_attempts >= 1")
    if ci_target is not None and ci_target < 0:
        raise ValueError(f"ci_target must be >= 0 or None, got {ci_target}")
    t_start = time.monotonic()
    ci_target = ci_target or None
    max_samples = max(max_samples, n_samples) if ci_target else n_samples
    auto_ref, auto_probe = _is_auto(reference), _is_auto(contention)
    dev = resolve_device(sync, device) if auto_ref or auto_probe else device
    if auto_ref:
        ref: Reference | None = reference_for(dev or "cpu")
    elif isinstance(reference, Reference) or reference is None:
        ref = reference
    elif callable(reference):
        ref = Reference(fn=reference, sync=sync, method="caller's reference callable, "
                        "interleaved round by round")
    else:
        raise ValueError(f"reference must be 'auto', a Reference, a callable or None, got "
                         f"{reference!r}")
    probe = contention
    if auto_probe:
        probe = ContentionProbe(device=dev or "cpu", threads=threads_in_use(dev or "cpu"))

    def once() -> _Attempt:
        return _measure_once(fn, sync, ref, warmup=warmup, min_sample_s=min_sample_s,
                             n_samples=n_samples, max_samples=max_samples,
                             ci_target=ci_target, max_total_s=max_total_s)

    parts = [METHOD]
    if ref is not None:
        parts.append(METHOD_REF)
    if ci_target:
        parts.append(METHOD_ADAPTIVE.format(ci_target))
    contended: bool | None = None
    info: dict[str, Any] | None = None
    if probe is None:
        kept = once()
        n_attempts = 1
    else:
        parts.append(METHOD_PROBE)
        attempts: list[tuple[_Attempt, dict[str, Any]]] = []
        waits: list[dict[str, Any]] = []
        stop_reason = f"max_attempts ({max_attempts}) reached"
        for k in range(max_attempts):
            if k > 0:
                wait = probe.wait_for_quiet(quiet_wait_s)
                waits.append(wait)
                if not wait.get("quiet"):
                    stop_reason = (f"no quiet window within {quiet_wait_s:g} s; another attempt "
                                   "under the same load would not do better")
                    break
            before = probe.start()
            attempt = once()
            figures = probe.stop(before)
            attempts.append((attempt, figures))
            if figures.get("contended") is not True:
                stop_reason = ("not contended" if figures.get("contended") is False
                               else "contention unknown (probe read none of its inputs)")
                break
        scores = [f.get("score") for _, f in attempts]
        best = min(range(len(attempts)), key=lambda i: (
            math.inf if scores[i] is None else scores[i], i))
        kept, kept_figures = attempts[best]
        contended = kept_figures.get("contended")
        n_attempts = len(attempts)
        info = {"rule": RULE, "policy": (f"re-measure a contended attempt, up to {max_attempts} "
                                         f"attempts, each after a quiet window within "
                                         f"{quiet_wait_s:g} s; keep the lowest score"),
                "n_attempts": n_attempts, "kept_attempt": best, "stop_reason": stop_reason,
                "attempts": [_attempt_summary(a, f) for a, f in attempts], "waits": waits}
    return Timing(
        samples_s=tuple(kept.samples_s),
        iters=kept.iters,
        warmup=warmup,
        n_requested=n_samples,
        stopped_early=len(kept.samples_s) < n_samples,
        total_s=time.monotonic() - t_start,
        method="; ".join(parts),
        ref_samples_s=tuple(kept.ref_samples_s),
        ref_iters=kept.ref_iters,
        ref_method=ref.method if ref is not None else None,
        ci_target=ci_target,
        ci_met=kept.ci_met,
        max_samples=max_samples,
        contended=contended,
        contention=info,
        attempts=n_attempts,
    )


_fork_safe = False  # set by a cell process before its task runs: see allow_fork


def allow_fork() -> None:
    """Declare this process fork-safe for :func:`in_processes`: single-threaded, no parallel
    torch op run and CUDA not initialised yet. Only a cell process can promise that, at its
    start (``harness.cell.main``); anywhere else (a test, a notebook) forking could inherit a
    dead OpenMP pool and hang."""
    global _fork_safe
    _fork_safe = True


def in_processes(n: int, fn: Callable[[], Any]) -> list[Any]:
    """``fn()`` in ``n`` fresh processes, one after another; their (picklable) results.

    Each is forked from this process, so it forks only where :func:`allow_fork` was called
    (a cell process, before its task ran any torch op: OpenMP's thread pool does not survive
    a fork, nor does CUDA); ``fn`` builds its models and data itself. A child dies with this
    process (PR_SET_PDEATHSIG) and stays in its process group, so a timeout's group kill
    reaches it. An exception in a child is raised here with the child's traceback. Elsewhere,
    or with ``n <= 1`` or no ``os.fork``: ``fn()`` once, here (the row records 1 process).
    """
    if n <= 1 or not hasattr(os, "fork") or not _fork_safe or threading.active_count() > 1:
        return [fn()]
    parent = os.getpid()
    results = []
    for _ in range(n):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, send the result, leave without cleanup
            os.close(read)
            try:
                die_with_parent(parent)
                payload = pickle.dumps(("ok", fn()))
            except BaseException:  # noqa: BLE001 - reported to the parent
                payload = pickle.dumps(("error", traceback.format_exc()))
            with os.fdopen(write, "wb") as out:
                out.write(payload)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as inp:
            payload = inp.read()
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise RuntimeError(f"measurement process {pid} ended without a result "
                               f"(wait status {status})")
        kind, value = pickle.loads(payload)
        if kind == "error":
            raise RuntimeError(f"measurement process failed:\n{value}")
        results.append(value)
    return results


def pooled(timings: list[Timing]) -> Timing:
    """One Timing from several processes' (:func:`in_processes`): samples pooled in process
    order (each workload sample stays paired with its round's reference sample), contended if
    any process was, the CI target met only if every process met it; per-process medians and
    contention are kept in ``contention["processes"]``."""
    if len(timings) == 1:
        return timings[0]
    first = timings[0]
    per_process = [{"median_ms": quantile(t.samples_s, 0.5) * 1e3, "n": len(t.samples_s),
                    "iters": t.iters, "contended": t.contended, "ci_met": t.ci_met,
                    "ref_median_ms": (quantile(t.ref_samples_s, 0.5) * 1e3
                                      if t.ref_samples_s else None),
                    "contention": t.contention} for t in timings]
    flags = [t.contended for t in timings]
    met = [t.ci_met for t in timings]
    return Timing(
        samples_s=tuple(x for t in timings for x in t.samples_s),
        iters=first.iters, warmup=first.warmup, n_requested=first.n_requested,
        stopped_early=any(t.stopped_early for t in timings),
        total_s=sum(t.total_s for t in timings),
        method=f"{first.method}; pooled over {len(timings)} fresh processes",
        ref_samples_s=tuple(x for t in timings for x in t.ref_samples_s),
        ref_iters=first.ref_iters, ref_method=first.ref_method, ci_target=first.ci_target,
        ci_met=None if any(m is None for m in met) else all(met),
        max_samples=first.max_samples,
        contended=None if all(f is None for f in flags) else any(bool(f) for f in flags),
        contention={"processes": per_process, "rule": RULE},
        attempts=sum(t.attempts for t in timings),
    )


def sync_for(device: str) -> Callable[[], None]:
    """The synchronize function to pass as ``sync``: ``torch.cuda.synchronize`` for CUDA
    devices (bound to that device; its ``device`` attribute names it), a no-op for CPU, where
    kernels run synchronously."""
    if device.startswith("cuda"):
        return _CudaSync(device)  # imports torch lazily: CPU-only callers never need it here
    return _no_sync
