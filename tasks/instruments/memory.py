"""Peak memory of one phase above that phase's baseline (docs/METHOD.md, Memory).

CPU: the kernel's resident-set high-water mark. Writing ``5`` to ``/proc/self/clear_refs``
resets ``VmHWM`` to the current RSS (Linux >= 4.0); after the phase ``VmHWM`` is the peak.
``tracemalloc`` misses torch's allocations and a before/after RSS misses the peak, so
neither is used. Run cells with ``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536``
so freed buffers return to the OS and a phase's baseline is not inflated by the last one.

CUDA: ``torch.cuda`` caching-allocator peaks after ``reset_peak_memory_stats``, plus NVML's
per-process used memory (what ``nvidia-smi`` shows: allocator reserve, context and kernels).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from tasks.instruments.hardware import cuda_index, nvml_index

log = logging.getLogger(__name__)

CLEAR_REFS = "/proc/self/clear_refs"
STATUS = "/proc/self/status"
CPU_METHOD = ("peak RSS above baseline: VmHWM after the phase minus VmRSS at its start, "
              "VmHWM reset by writing 5 to /proc/self/clear_refs")
CUDA_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats minus "
               "memory_allocated at the phase start (tensors only, caching allocator)")


class MemoryUnavailable(Exception):
    """Peak memory cannot be measured here; the message says why."""


@dataclass(frozen=True)
class MemoryReading:
    """Bytes. ``peak_bytes_above_baseline`` is the headline number; ``method`` defines it."""

    device: str
    peak_bytes_above_baseline: int
    baseline_bytes: int
    peak_bytes: int
    method: str
    max_allocated_bytes: int | None = None  # CUDA: torch.cuda.max_memory_allocated
    max_reserved_bytes: int | None = None  # CUDA: torch.cuda.max_memory_reserved
    nvml_process_used_bytes: int | None = None  # CUDA: NVML usedGpuMemory at the phase end

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status_kb(field: str) -> int:
    with open(STATUS, encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise MemoryUnavailable(f"{field} not found in {STATUS}")


def _reset_hwm() -> None:
    with open(CLEAR_REFS, "w", encoding="ascii") as f:
        f.write("5")


def cpu_peak_available() -> str | None:
    """None when the CPU peak can be measured; otherwise the reason it cannot."""
    try:
        _status_kb("VmHWM")
        _reset_hwm()
    except (OSError, MemoryUnavailable) as exc:
        return f"cannot reset the RSS high-water mark via {CLEAR_REFS}: {exc}"
    return None


class PeakMemory:
    """Context manager measuring the peak memory of the code in its body.

    >>> with PeakMemory("cpu") as pm:
    ...     work()
    >>> pm.reading.peak_bytes_above_baseline
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._cuda = device.startswith("cuda")
        self._baseline = 0
        self._reading: MemoryReading | None = None

    @property
    def reading(self) -> MemoryReading:
        if self._reading is None:
            raise RuntimeError("PeakMemory.reading is set when the with-block exits normally")
        return self._reading

    def __enter__(self) -> PeakMemory:
        self._baseline = self._start_cuda() if self._cuda else self._start_cpu()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._reading = self._stop_cuda() if self._cuda else self._stop_cpu()

    def _start_cpu(self) -> int:
        reason = cpu_peak_available()  # also performs the reset
        if reason is not None:
            raise MemoryUnavailable(reason)
        return _status_kb("VmRSS") * 1024

    def _stop_cpu(self) -> MemoryReading:
        peak = _status_kb("VmHWM") * 1024
        return MemoryReading(self.device, peak - self._baseline, self._baseline, peak, CPU_METHOD)

    def _start_cuda(self) -> int:
        import torch  # lazy: CPU measurements never import torch here

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def _stop_cuda(self) -> MemoryReading:
        import torch

        torch.cuda.synchronize(self.device)
        allocated = int(torch.cuda.max_memory_allocated(self.device))
        return MemoryReading(
            self.device, allocated - self._baseline, self._baseline, allocated, CUDA_METHOD,
            max_allocated_bytes=allocated,
            max_reserved_bytes=int(torch.cuda.max_memory_reserved(self.device)),
            nvml_process_used_bytes=nvml_process_used_bytes(self.device),
        )


def nvml_process_used_bytes(device: str) -> int | None:
    """GPU memory NVML attributes to this process on ``device``; None where NVML cannot say
    (no pynvml or driver, or a container whose PID namespace hides our PID from NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(cuda_index(device)))
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception as exc:  # noqa: BLE001 - ImportError or any NVMLError: record None
        log.debug("NVML per-process memory unavailable: %r", exc)
        return None
    for proc in processes:
        if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory)
    return None


def measure_peak(fn: Callable[[], object], device: str = "cpu") -> MemoryReading:
    """Run ``fn()`` once and return its peak memory above the baseline at its start."""
    with PeakMemory(device) as pm:
        fn()
    return pm.reading
