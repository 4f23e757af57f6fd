"""Energy meters behind one interface (docs/METHOD.md, Energy; after Zeus / ML.ENERGY).

A meter has ``start()`` and ``stop() -> EnergyReading``. ``RaplMeter`` reads CPU package
counters from powercap sysfs; ``NvmlMeter`` reads the GPU's total-energy counter, or
integrates sampled power where the counter is not supported. Where no meter exists the
reason is raised as ``EnergyUnavailable``: energy is then stored as unavailable, never 0.
``measure_energy`` loops a workload over a window long enough for the counter's update
period and subtracts an idle baseline taken with the same meter.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tasks.instruments.hardware import cuda_index, nvml_index

log = logging.getLogger(__name__)

RAPL_ROOT = "/sys/class/powercap"
# Package-level zones only: "intel-rapl:0", "amd-rapl:1". Subzones ("intel-rapl:0:0", core,
# uncore, dram) are parts of their package and would double count; "intel-rapl-mmio:0"
# mirrors package 0 through MMIO and is excluded by the pattern for the same reason.
_RAPL_PACKAGE = re.compile(r"^(intel|amd)-rapl:\d+$")
_PSYS = "psys"  # platform domain that already contains the packages (laptops): excluded
PLAUSIBLE_POWER_FACTOR = 1.2  # reject energy above power limit x window x this
DEFAULT_SAMPLE_HZ = 20.0  # power sampling fallback; docs/METHOD.md asks for >= 10 Hz


class EnergyUnavailable(Exception):
    """No meter can be used here; ``reason`` (also the message) says why, for the record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EnergyError(Exception):
    """A reading was taken but rejected as implausible (negative or above the power limit)."""


@dataclass(frozen=True)
class EnergyReading:
    joules: float
    window_s: float
    method: str  # "rapl energy_uj", "nvml total_energy counter", "nvml power sampling"
    samples: int  # counter reads (start and stop) or power samples integrated
    domains: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnergyMeter(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> EnergyReading: ...

    def cancel(self) -> None: ...


def check_plausible(joules: float, window_s: float, power_limit_w: float | None) -> None:
    """Raise EnergyError for a negative delta or one above power_limit x window x 1.2."""
    if joules < 0:
        raise EnergyError(f"negative energy delta {joules:.3f} J over {window_s:.3f} s")
    if power_limit_w is not None:
        ceiling = power_limit_w * window_s * PLAUSIBLE_POWER_FACTOR
        if joules > ceiling:
            raise EnergyError(
                f"implausible energy {joules:.3f} J over {window_s:.3f} s: above power limit "
                f"{power_limit_w:.1f} W x window x {PLAUSIBLE_POWER_FACTOR} = {ceiling:.3f} J")


# --- RAPL -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RaplDomain:
    label: str  # "intel-rapl:0 (package-0)"
    energy_path: str
    max_range_uj: int


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as f:
        return int(f.read().strip())


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _rapl_domain(root: str, entry: str) -> _RaplDomain | None:
    zone = os.path.join(root, entry)
    name = _read_text(os.path.join(zone, "name")) or "?"
    if name == _PSYS:
        return None
    energy_path = os.path.join(zone, "energy_uj")
    try:
        _read_int(energy_path)
        max_range = _read_int(os.path.join(zone, "max_energy_range_uj"))
    except PermissionError as exc:
        raise EnergyUnavailable(
            f"cannot read {energy_path}: permission denied (energy_uj is root-only since "
            f"Linux 5.10; run as root or grant read access): {exc}") from exc
    except (OSError, ValueError) as exc:
        raise EnergyUnavailable(f"cannot read RAPL counter in {zone}: {exc}") from exc
    return _RaplDomain(f"{entry} ({name})", energy_path, max_range)


def rapl_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter delta in microjoules; a counter that wrapped once restarts from 0 after
    ``max_range_uj`` (more than one wrap in a window cannot be detected: keep windows short
    of max_range / package power, minutes to hours)."""
    return end - start if end >= start else max_range_uj - start + end


class RaplMeter:
    """CPU package energy from powercap RAPL counters, summed over package domains."""

    name = "rapl"
    method = "rapl energy_uj"

    def __init__(self, root: str = RAPL_ROOT) -> None:
        if not os.path.isdir(root):
            raise EnergyUnavailable(
                f"no RAPL domains: {root} does not exist (CPU energy counters are not exposed "
                f"on this machine, typical in VMs)")
        entries = sorted(e for e in os.listdir(root) if _RAPL_PACKAGE.match(e))
        domains = [d for e in entries if (d := _rapl_domain(root, e)) is not None]
        if not domains:
            raise EnergyUnavailable(
                f"no RAPL domains: {root} holds no package zone matching intel-rapl:N or "
                f"amd-rapl:N")
        self._domains = tuple(domains)
        self._start: tuple[tuple[int, ...], int] | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(d.label for d in self._domains)

    def _read(self) -> tuple[int, ...]:
        return tuple(_read_int(d.energy_path) for d in self._domains)

    def start(self) -> None:
        self._start = (self._read(), time.perf_counter_ns())

    def stop(self) -> EnergyReading:
        if self._start is None:
            raise RuntimeError("RaplMeter.stop() called before start()")
        end, t1 = self._read(), time.perf_counter_ns()
        begin, t0 = self._start
        self._start = None
        uj = sum(rapl_delta_uj(b, e, d.max_range_uj)
                 for b, e, d in zip(begin, end, self._domains, strict=True))
        return EnergyReading(uj / 1e6, (t1 - t0) / 1e9, self.method, 2, self.domains)

    def cancel(self) -> None:
        self._start = None


# --- NVML -----------------------------------------------------------------------------------


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise EnergyUnavailable(f"pynvml is not installed: {exc}") from exc
    return pynvml


class _PowerSampler:
    """Background thread reading power (W) at ``hz``; trapezoid integral on ``stop``."""

    def __init__(self, read_w: Callable[[], float], hz: float) -> None:
        self._read_w = read_w
        self._period = 1.0 / hz
        self._points: list[tuple[float, float]] = []
        self._error: Exception | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-power-sampler", daemon=True)

    def _sample(self) -> None:
        self._points.append((time.perf_counter(), self._read_w()))

    def _run(self) -> None:
        try:
            while not self._halt.wait(self._period):
                self._sample()
        except Exception as exc:  # noqa: BLE001 - re-raised in stop() on the caller's thread
            self._error = exc

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> list[tuple[float, float]]:
        self._halt.set()
        self._thread.join()
        if self._error is not None:
            raise EnergyError(f"power sampling failed: {self._error}") from self._error
        self._sample()
        return self._points


def trapezoid_joules(points: list[tuple[float, float]]) -> float:
    """Integral of power over time, (t_s, W) points in time order, trapezoid rule."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in itertools.pairwise(points))


class NvmlMeter:
    """GPU energy from NVML: total-energy counter (mJ, Volta+), else power sampling.

    ``device_index`` is NVML's index (see ``hardware.nvml_index`` for torch's numbering).
    ``nvml`` is the pynvml module or a stand-in with the same function names (tests).
    """

    name = "nvml"

    def __init__(self, device_index: int = 0, nvml: Any = None,
                 sample_hz: float = DEFAULT_SAMPLE_HZ) -> None:
        self._nvml = nvml if nvml is not None else _import_pynvml()
        self._sample_hz = sample_hz
        try:
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(device_index)
        except self._nvml.NVMLError as exc:
            raise EnergyUnavailable(f"pynvml could not initialise: {exc}") from exc
        self.domains = (f"gpu:{device_index}",)
        self.use_counter = self._supports(self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        if not self.use_counter and not self._supports(self._nvml.nvmlDeviceGetPowerUsage):
            raise EnergyUnavailable(
                f"NVML device {device_index} supports neither the total-energy counter nor "
                f"power readings")
        self.power_limit_w = self._power_limit_w()
        self._begin: tuple[float, int] | None = None
        self._sampler: _PowerSampler | None = None

    @property
    def method(self) -> str:
        return "nvml total_energy counter" if self.use_counter else "nvml power sampling"

    def _supports(self, query: Callable[[Any], Any]) -> bool:
        try:
            query(self._handle)
        except self._nvml.NVMLError as exc:
            log.info("NVML %s not supported: %s", getattr(query, "__name__", query), exc)
            return False
        return True

    def _power_limit_w(self) -> float | None:
        try:
            return self._nvml.nvmlDeviceGetEnforcedPowerManagementLimit(self._handle) / 1000
        except self._nvml.NVMLError as exc:
            log.warning("NVML power limit unknown, upper sanity bound disabled: %s", exc)
            return None

    def _power_w(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000  # mW -> W

    def start(self) -> None:
        if self.use_counter:
            self._begin = (time.perf_counter(),
                           self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        else:
            self._sampler = _PowerSampler(self._power_w, self._sample_hz)
            self._sampler.start()

    def stop(self) -> EnergyReading:
        if self.use_counter:
            if self._begin is None:
                raise RuntimeError("NvmlMeter.stop() called before start()")
            end_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            t1 = time.perf_counter()
            (t0, begin_mj), self._begin = self._begin, None
            joules, window, samples = (end_mj - begin_mj) / 1000, t1 - t0, 2
        else:
            if self._sampler is None:
                raise RuntimeError("NvmlMeter.stop() called before start()")
            points, self._sampler = self._sampler.stop(), None
            window = points[-1][0] - points[0][0]
            joules, samples = trapezoid_joules(points), len(points)
        check_plausible(joules, window, self.power_limit_w)
        return EnergyReading(joules, window, self.method, samples, self.domains)

    def cancel(self) -> None:
        self._begin = None
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            try:
                sampler.stop()
            except EnergyError as exc:  # already failing: the caller's exception matters more
                log.debug("power sampler failed while cancelled: %s", exc)


# --- selection, measurement, doctor ---------------------------------------------------------


def select_meter(device: str, *, rapl_root: str = RAPL_ROOT, nvml: Any = None) -> EnergyMeter:
    """The meter for ``device`` ("cpu", "cuda", "cuda:N"), or EnergyUnavailable with why."""
    if device == "cpu":
        return RaplMeter(rapl_root)
    if device.startswith("cuda"):
        return NvmlMeter(nvml_index(cuda_index(device)), nvml=nvml)
    raise EnergyUnavailable(f"no energy meter for device {device!r} (known: cpu, cuda[:N])")


@dataclass(frozen=True)
class EnergyMeasurement:
    """Joules of a looped workload, gross and net of an idle baseline from the same meter."""

    gross_joules: float
    baseline_joules: float | None  # idle energy over baseline_window_s; None if idle_s == 0
    baseline_window_s: float | None
    net_joules: float | None  # gross - baseline * window / baseline_window
    iterations: int
    window_s: float
    method: str
    samples: int
    domains: tuple[str, ...]

    @property
    def joules_per_iteration(self) -> float:
        return self.gross_joules / self.iterations

    @property
    def net_joules_per_iteration(self) -> float | None:
        return None if self.net_joules is None else self.net_joules / self.iterations

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["joules_per_iteration"] = self.joules_per_iteration
        d["net_joules_per_iteration"] = self.net_joules_per_iteration
        return d


def _metered(meter: EnergyMeter, body: Callable[[], int], sync: Callable[[], None]
             ) -> tuple[EnergyReading, int]:
    """Run ``body`` between synchronized meter reads; ``body`` returns an iteration count."""
    sync()
    meter.start()
    try:
        count = body()
        sync()
    except BaseException:
        meter.cancel()
        raise
    return meter.stop(), count


def _loop_for(fn: Callable[[], object], min_window_s: float) -> Callable[[], int]:
    def body() -> int:
        deadline = time.perf_counter() + min_window_s
        count = 0
        while count == 0 or time.perf_counter() < deadline:
            fn()
            count += 1
        return count
    return body


def _sleep_for(seconds: float) -> Callable[[], int]:
    def body() -> int:
        time.sleep(seconds)
        return 0
    return body


def measure_energy(fn: Callable[[], object], meter: EnergyMeter, *, min_window_s: float = 1.0,
                   sync: Callable[[], None] = lambda: None, idle_s: float | None = None
                   ) -> EnergyMeasurement:
    """Loop ``fn`` for >= ``min_window_s`` between two synchronized reads, then sleep for the
    same window (or ``idle_s``; 0 skips it) as the idle baseline, read by the same meter.

    The window may exceed ``min_window_s`` by one call plus the final sync: it is the time
    between the meter's reads. On GPU the host loop only enqueues; the final sync drains it.
    The idle baseline follows the workload, so a device still clocked up from it makes the
    baseline err high and the net figure err low (conservative).
    """
    gross, iterations = _metered(meter, _loop_for(fn, min_window_s), sync)
    idle_window = gross.window_s if idle_s is None else idle_s
    baseline: EnergyReading | None = None
    if idle_window > 0:
        baseline, _ = _metered(meter, _sleep_for(idle_window), sync)
    net = None if baseline is None else (
        gross.joules - baseline.joules * gross.window_s / baseline.window_s)
    return EnergyMeasurement(
        gross_joules=gross.joules,
        baseline_joules=None if baseline is None else baseline.joules,
        baseline_window_s=None if baseline is None else baseline.window_s,
        net_joules=net, iterations=iterations, window_s=gross.window_s,
        method=gross.method, samples=gross.samples, domains=gross.domains)


def _probe(name: str, make: Callable[[], Any]) -> dict[str, Any]:
    try:
        meter = make()
    except EnergyUnavailable as exc:
        return {"meter": name, "available": False, "method": None, "domains": [],
                "reason": exc.reason}
    return {"meter": name, "available": True, "method": meter.method,
            "domains": list(meter.domains), "reason": None}


def probe_meters(device: str = "cpu", *, rapl_root: str = RAPL_ROOT, nvml: Any = None
                 ) -> list[dict[str, Any]]:
    """For ``archbench doctor``: each relevant meter, whether it works here and why not.
    RAPL (host CPU) always; NVML as well for CUDA devices."""
    probes = [_probe("rapl", lambda: RaplMeter(rapl_root))]
    if device.startswith("cuda"):
        probes.append(_probe("nvml", lambda: NvmlMeter(nvml_index(cuda_index(device)), nvml)))
    return probes
