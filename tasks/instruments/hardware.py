"""Hardware fingerprint and device description (docs/METHOD.md, Hardware).

``stable`` holds what does not change at boot (CPU model and count, memory, GPU, driver,
CUDA and torch versions) and is hashed into the fingerprint that keys results; ``volatile``
holds what does (load, clocks, temperatures, thread settings) and is recorded, not hashed.
Every probe is optional: a missing file, library or permission records None, never raises.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)
V = TypeVar("V")
GIB = 1024**3


@dataclass(frozen=True)
class Hardware:
    fingerprint: str  # first 16 hex digits of sha256 over canonical JSON of ``stable``
    stable: dict[str, Any]
    volatile: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "stable": self.stable, "volatile": self.volatile}


def _probe(fn: Callable[[], V]) -> V | None:
    """Run one probe; any failure (missing file, library, driver, permission) becomes None."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a probe may fail in any way; we record None
        log.debug("hardware probe %s failed: %r", getattr(fn, "__name__", fn), exc)
        return None


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _cpuinfo_values(key: str) -> list[str]:
    values = []
    for line in _read("/proc/cpuinfo").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            values.append(value.strip())
    return values


def _cpu_model() -> str | None:
    for key in ("model name", "Hardware", "Processor", "cpu model"):  # x86, then ARM/others
        values = _probe(lambda key=key: _cpuinfo_values(key))
        if values:
            return values[0]
    return platform.processor() or None


def _mem_total_gib() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) * 1024 / GIB)
    raise LookupError("MemTotal not in /proc/meminfo")


def _torch() -> Any:
    import torch  # lazy: hardware description must not require torch at import

    return torch


def _nvml() -> Any:
    import pynvml  # lazy and optional

    pynvml.nvmlInit()
    return pynvml


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # old pynvml returns bytes


def cuda_index(device: str) -> int:
    """'cuda' -> 0, 'cuda:1' -> 1."""
    _, _, index = device.partition(":")
    return int(index) if index else 0


def nvml_index(cuda_idx: int) -> int:
    """NVML device index of the CUDA device ``cuda_idx`` as torch numbers it.

    NVML ignores CUDA_VISIBLE_DEVICES; map through it when it lists integer indices.
    UUID-style lists and CUDA_DEVICE_ORDER=FASTEST_FIRST on mixed multi-GPU hosts are not
    resolved here (logged); on single-GPU machines the indices always agree.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return cuda_idx
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_idx < len(entries) and entries[cuda_idx].isdigit():
        return int(entries[cuda_idx])
    log.warning("cannot map CUDA device %d through CUDA_VISIBLE_DEVICES=%r; using it as the "
                "NVML index", cuda_idx, visible)
    return cuda_idx


def _cpu_stable() -> dict[str, Any]:
    torch = _probe(_torch)
    return {
        "cpu_model": _probe(_cpu_model),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _probe(_mem_total_gib),
        "machine": platform.machine(),
        "os": platform.system(),
        "python": platform.python_version(),
        "torch": getattr(torch, "__version__", None),
        "torch_cuda": _probe(lambda: torch.version.cuda) if torch else None,
    }


def _gpu_stable(device: str) -> dict[str, Any]:
    idx = cuda_index(device)
    torch = _probe(_torch)
    props = _probe(lambda: torch.cuda.get_device_properties(idx)) if torch else None
    nvml = _probe(_nvml)
    handle = _probe(lambda: nvml.nvmlDeviceGetHandleByIndex(nvml_index(idx))) if nvml else None
    name = getattr(props, "name", None)
    if name is None and handle is not None:
        name = _probe(lambda: _text(nvml.nvmlDeviceGetName(handle)))
    total = getattr(props, "total_memory", None)
    if total is None and handle is not None:
        total = _probe(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total))
    capability = f"{props.major}.{props.minor}" if props is not None else None
    return {
        "gpu_name": name,
        "gpu_memory_bytes": total,
        "gpu_compute_capability": capability,
        "gpu_driver": _probe(lambda: _text(nvml.nvmlSystemGetDriverVersion())) if nvml else None,
    }


def _stable(device: str) -> dict[str, Any]:
    stable = {"device_type": device.partition(":")[0], **_cpu_stable()}
    if device.startswith("cuda"):
        stable.update(_gpu_stable(device))
    return stable


def _cpu_mhz() -> float | None:
    values = [float(v) for v in _cpuinfo_values("cpu MHz")]
    if not values:
        freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
        return round(int(freq) / 1000, 1)  # kHz
    return round(sum(values) / len(values), 1)


def _temperatures_c() -> dict[str, float]:
    """Thermal zones and hwmon sensors, degrees Celsius (sysfs reports millidegrees)."""
    temps: dict[str, float] = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        value = _probe(lambda zone=zone: int(_read(f"{zone}/temp")) / 1000)
        if value is not None:
            kind = _probe(lambda zone=zone: _read(f"{zone}/type").strip()) or "zone"
            temps[f"{os.path.basename(zone)}:{kind}"] = value
    for sensor in sorted(glob.glob("/sys/class/hwmon/hwmon*/temp*_input")):
        value = _probe(lambda sensor=sensor: int(_read(sensor)) / 1000)
        if value is not None:
            hwmon = os.path.dirname(sensor)
            chip = _probe(lambda hwmon=hwmon: _read(f"{hwmon}/name").strip()) or "hwmon"
            temps[f"{os.path.basename(hwmon)}:{chip}:{os.path.basename(sensor)}"] = value
    return temps


def _cpu_volatile() -> dict[str, Any]:
    torch = _probe(_torch)
    return {
        "load_avg": _probe(lambda: list(os.getloadavg())),
        "cpu_mhz": _probe(_cpu_mhz),
        "cpu_governor": _probe(
            lambda: _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()),
        "usable_cpus": _probe(lambda: len(os.sched_getaffinity(0))),
        "temperatures_c": _probe(_temperatures_c) or None,
        "torch_threads": _probe(lambda: torch.get_num_threads()) if torch else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }


def _gpu_volatile(device: str) -> dict[str, Any]:
    nvml = _probe(_nvml)
    idx = nvml_index(cuda_index(device))
    handle = _probe(lambda: nvml.nvmlDeviceGetHandleByIndex(idx)) if nvml else None
    if handle is None:
        return {"gpu_sm_clock_mhz": None, "gpu_mem_clock_mhz": None, "gpu_temperature_c": None,
                "gpu_power_w": None, "gpu_pstate": None}
    return {
        "gpu_sm_clock_mhz": _probe(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "gpu_mem_clock_mhz": _probe(
            lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "gpu_temperature_c": _probe(
            lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        "gpu_power_w": _probe(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
        "gpu_pstate": _probe(lambda: int(nvml.nvmlDeviceGetPerformanceState(handle))),
    }


def fingerprint_of(stable: dict[str, Any]) -> str:
    """sha256 of canonical JSON (sorted keys, no whitespace), first 16 hex digits."""
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def fingerprint(device: str = "cpu") -> Hardware:
    """Stable fingerprint plus volatile state of this machine as used by ``device``."""
    stable = _stable(device)
    volatile = _cpu_volatile()
    if device.startswith("cuda"):
        volatile.update(_gpu_volatile(device))
    return Hardware(fingerprint=fingerprint_of(stable), stable=stable, volatile=volatile)


def _cuda_absent_reason(torch: Any) -> str:
    if torch is None:
        return "torch is not importable"
    if getattr(torch.version, "cuda", None) is None:
        return f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    count = _probe(torch.cuda.device_count)
    if not count:
        return "torch has CUDA but sees no device (no driver, or CUDA_VISIBLE_DEVICES hides them)"
    return "torch.cuda.is_available() is False"


def describe_devices() -> list[dict[str, Any]]:
    """One dict per device for ``archbench doctor``: CPU always, then each CUDA device,
    or one CUDA entry with ``available: False`` and the reason."""
    cpu = _cpu_stable()
    devices: list[dict[str, Any]] = [{
        "device": "cpu", "available": True, "name": cpu["cpu_model"],
        "logical_cpus": cpu["logical_cpus"], "memory_gib": cpu["memory_gib"],
    }]
    torch = _probe(_torch)
    devices[0]["torch_threads"] = _probe(lambda: torch.get_num_threads()) if torch else None
    if torch is None or not _probe(torch.cuda.is_available):
        devices.append({"device": "cuda", "available": False, "reason": _cuda_absent_reason(torch)})
        return devices
    for idx in range(torch.cuda.device_count()):
        gpu = _gpu_stable(f"cuda:{idx}")
        devices.append({"device": f"cuda:{idx}", "available": True, "name": gpu["gpu_name"],
                        "memory_bytes": gpu["gpu_memory_bytes"],
                        "compute_capability": gpu["gpu_compute_capability"],
                        "driver": gpu["gpu_driver"]})
    return devices

