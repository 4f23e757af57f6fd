"""Energy meters on fake sysfs trees and a fake NVML; peak memory on real allocations."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.instruments import energy
from tasks.instruments.energy import (
    EnergyError,
    EnergyReading,
    EnergyUnavailable,
    NvmlMeter,
    RaplMeter,
    measure_energy,
    probe_meters,
    select_meter,
)
from tasks.instruments.memory import MemoryReading, PeakMemory, cpu_peak_available, measure_peak

MB = 1_000_000

# --- RAPL on a fake powercap tree -----------------------------------------------------------


def make_zone(root: Path, entry: str, name: str, energy_uj: int, max_uj: int = 10**9) -> Path:
    zone = root / entry
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path: Path) -> dict[str, Path]:
    """Two packages, a core subzone, an MMIO mirror and the control-type directory."""
    (tmp_path / "intel-rapl").mkdir()  # control type: no counter
    zones = {
        "pkg0": make_zone(tmp_path, "intel-rapl:0", "package-0", 990_000, max_uj=1_000_000),
        "pkg1": make_zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000),
        "core0": make_zone(tmp_path, "intel-rapl:0:0", "core", 100),
        "mmio0": make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 990_000),
    }
    zones["root"] = tmp_path
    return zones


def test_rapl_sums_packages_across_a_wraparound(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(str(powercap["root"]))
    assert meter.domains == ("intel-rapl:0 (package-0)", "intel-rapl:1 (package-1)")
    meter.start()
    set_energy(powercap["pkg0"], 10_000)  # wrapped: 990_000 -> 1_000_000 -> 0 -> 10_000
    set_energy(powercap["pkg1"], 7_000_000)
    set_energy(powercap["core0"], 50_000_000)  # subzone: part of pkg0, must not be added
    set_energy(powercap["mmio0"], 50_000_000)  # mirror of pkg0, must not be added
    reading = meter.stop()
    assert isinstance(reading, EnergyReading)
    assert reading.joules == pytest.approx(0.020 + 2.0)
    assert (reading.method, reading.samples) == ("rapl energy_uj", 2)
    assert reading.window_s >= 0


def test_rapl_skips_psys_and_accepts_amd_names(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:1", "psys", 0)  # platform domain contains the package
    make_zone(tmp_path, "amd-rapl:0", "package-0", 0)
    assert RaplMeter(str(tmp_path)).domains == ("amd-rapl:0 (package-0)",)


def test_rapl_missing_root(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailable, match="does not exist") as info:
        RaplMeter(str(tmp_path / "absent"))
    assert "typical in VMs" in info.value.reason


def test_rapl_root_without_domains(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0:0", "core", 0)  # a subzone alone is not a package
    with pytest.raises(EnergyUnavailable, match="no package zone"):
        RaplMeter(str(tmp_path))


def test_rapl_permission_denied(powercap: dict[str, Path], monkeypatch: pytest.MonkeyPatch
                                ) -> None:
    def denied(path: str) -> int:  # chmod does not stop root, so simulate the kernel's answer
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(energy, "_read_int", denied)
    with pytest.raises(EnergyUnavailable, match="permission denied"):
        RaplMeter(str(powercap["root"]))


def test_select_meter_cpu_without_rapl(tmp_path: Path) -> None:
    with pytest.raises(EnergyUnavailable) as info:
        select_meter("cpu", rapl_root=str(tmp_path / "absent"))
    assert info.value.reason


@pytest.mark.skipif(os.path.isdir(energy.RAPL_ROOT), reason="this machine exposes powercap")
def test_select_meter_cpu_on_this_machine() -> None:
    with pytest.raises(EnergyUnavailable) as info:
        select_meter("cpu")
    assert "does not exist" in info.value.reason


# --- NVML with a stand-in library -----------------------------------------------------------


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """The pynvml functions NvmlMeter uses; units as NVML's (mJ, mW)."""

    NVMLError = FakeNVMLError

    def __init__(self, *, counter: bool = True, power_mw: int = 100_000,
                 limit_mw: int | None = 300_000, init_error: bool = False) -> None:
        self.counter, self.power_mw, self.limit_mw = counter, power_mw, limit_mw
        self.init_error = init_error
        self.energy_mj = 1_000_000

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        return ("gpu", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        if not self.counter:
            raise FakeNVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self.power_mw

    def nvmlDeviceGetEnforcedPowerManagementLimit(self, handle: Any) -> int:
        if self.limit_mw is None:
            raise FakeNVMLError("Not Supported")
        return self.limit_mw


def counter_reading(fake: FakeNvml, delta_mj: int, window_s: float = 0.05) -> EnergyReading:
    meter = NvmlMeter(0, nvml=fake)
    meter.start()
    time.sleep(window_s)
    fake.energy_mj += delta_mj
    return meter.stop()


def test_nvml_counter() -> None:
    reading = counter_reading(FakeNvml(), delta_mj=2_500)  # 2.5 J in 50 ms: 50 W, plausible
    assert reading.joules == pytest.approx(2.5)
    assert (reading.method, reading.samples, reading.domains) == (
        "nvml total_energy counter", 2, ("gpu:0",))
    assert reading.window_s >= 0.05


def test_nvml_rejects_negative_delta() -> None:
    with pytest.raises(EnergyError, match="negative"):
        counter_reading(FakeNvml(), delta_mj=-1)


def test_nvml_rejects_implausible_delta() -> None:
    # 1 kJ in ~50 ms is ~20 kW, far above 300 W x window x 1.2
    with pytest.raises(EnergyError, match="implausible"):
        counter_reading(FakeNvml(), delta_mj=1_000_000)


def test_nvml_without_power_limit_skips_upper_bound() -> None:
    reading = counter_reading(FakeNvml(limit_mw=None), delta_mj=1_000_000)
    assert reading.joules == pytest.approx(1000.0)


def test_nvml_falls_back_to_power_sampling() -> None:
    meter = NvmlMeter(0, nvml=FakeNvml(counter=False, power_mw=100_000), sample_hz=100)
    assert meter.method == "nvml power sampling"
    meter.start()
    time.sleep(0.1)
    reading = meter.stop()
    assert reading.method == "nvml power sampling"
    assert reading.joules == pytest.approx(100.0 * reading.window_s)  # constant 100 W
    assert 0.1 <= reading.window_s < 0.5
    assert reading.samples >= 5  # ~100 Hz over 0.1 s, plus the start and stop reads


def test_nvml_init_failure_is_unavailable() -> None:
    with pytest.raises(EnergyUnavailable, match="pynvml could not initialise: Driver"):
        NvmlMeter(0, nvml=FakeNvml(init_error=True))


def test_select_meter_cuda_with_real_pynvml_here() -> None:
    try:
        meter = select_meter("cuda:0")
    except EnergyUnavailable as exc:
        assert exc.reason  # no driver on the development machine
    else:
        assert meter.name == "nvml"


def test_select_meter_cuda_and_unknown_device() -> None:
    assert isinstance(select_meter("cuda:0", nvml=FakeNvml()), NvmlMeter)
    with pytest.raises(EnergyUnavailable, match="no energy meter"):
        select_meter("mps")


# --- measure_energy and probes --------------------------------------------------------------


class WattMeter:
    """Deterministic meter: busy_w while the workload has run since start(), else idle_w."""

    name, method, domains = "fake", "fake watts", ("fake",)

    def __init__(self, busy_w: float, idle_w: float) -> None:
        self.busy_w, self.idle_w = busy_w, idle_w
        self.calls = 0
        self.cancelled = False
        self._t0 = 0.0
        self._calls0 = 0

    def work(self) -> None:
        self.calls += 1
        time.sleep(0.005)

    def start(self) -> None:
        self._t0, self._calls0 = time.perf_counter(), self.calls

    def stop(self) -> EnergyReading:
        window = time.perf_counter() - self._t0
        watts = self.busy_w if self.calls > self._calls0 else self.idle_w
        return EnergyReading(watts * window, window, self.method, 2, self.domains)

    def cancel(self) -> None:
        self.cancelled = True


def test_measure_energy_subtracts_idle_baseline() -> None:
    meter = WattMeter(busy_w=200.0, idle_w=50.0)
    syncs: list[int] = []
    m = measure_energy(meter.work, meter, min_window_s=0.05, sync=lambda: syncs.append(1),
                       idle_s=0.02)
    assert m.window_s >= 0.05 and m.iterations == meter.calls >= 2
    assert m.gross_joules == pytest.approx(200.0 * m.window_s)
    assert m.baseline_window_s is not None and m.baseline_window_s >= 0.02
    assert m.net_joules == pytest.approx(150.0 * m.window_s)  # baseline scaled to the window
    assert m.joules_per_iteration == pytest.approx(m.gross_joules / m.iterations)
    assert len(syncs) == 4  # before each of the four meter reads
    assert m.to_dict()["method"] == "fake watts"


def test_measure_energy_without_baseline() -> None:
    meter = WattMeter(busy_w=10.0, idle_w=1.0)
    m = measure_energy(meter.work, meter, min_window_s=0.0, idle_s=0)
    assert m.iterations == 1
    assert m.baseline_joules is None and m.net_joules is None
    assert m.net_joules_per_iteration is None


def test_measure_energy_cancels_on_error() -> None:
    meter = WattMeter(busy_w=10.0, idle_w=1.0)

    def boom() -> None:
        raise RuntimeError("cell crashed")

    with pytest.raises(RuntimeError, match="cell crashed"):
        measure_energy(boom, meter, min_window_s=0.0)
    assert meter.cancelled


def test_probe_meters(powercap: dict[str, Path], tmp_path: Path) -> None:
    [rapl] = probe_meters("cpu", rapl_root=str(tmp_path / "absent"))
    assert rapl["meter"] == "rapl" and not rapl["available"] and rapl["reason"]
    rapl, nvml = probe_meters("cuda:0", rapl_root=str(powercap["root"]),
                              nvml=FakeNvml(counter=False))
    assert rapl["available"] and rapl["domains"] == ["intel-rapl:0 (package-0)",
                                                     "intel-rapl:1 (package-1)"]
    assert nvml == {"meter": "nvml", "available": True, "method": "nvml power sampling",
                    "domains": ["gpu:0"], "reason": None}


# --- peak memory ----------------------------------------------------------------------------

needs_clear_refs = pytest.mark.skipif(cpu_peak_available() is not None,
                                      reason=f"{cpu_peak_available()}")


@needs_clear_refs
def test_peak_memory_sees_a_transient_200mb_tensor() -> None:
    torch = pytest.importorskip("torch")
    # the tensor is freed before the phase ends: a before/after RSS reading would miss it
    reading = measure_peak(lambda: torch.ones(50 * MB, dtype=torch.float32).sum(), "cpu")
    assert isinstance(reading, MemoryReading)
    assert 150 * MB < reading.peak_bytes_above_baseline < 300 * MB
    assert reading.peak_bytes == reading.baseline_bytes + reading.peak_bytes_above_baseline
    assert "VmHWM" in reading.method and reading.max_allocated_bytes is None


@needs_clear_refs
def test_peak_memory_resets_between_phases() -> None:
    torch = pytest.importorskip("torch")
    with PeakMemory("cpu") as big:
        torch.ones(50 * MB).sum()
    with PeakMemory("cpu") as empty:  # the previous phase's peak must not leak in
        pass
    assert big.reading.peak_bytes_above_baseline > 150 * MB
    assert empty.reading.peak_bytes_above_baseline < 10 * MB


def test_peak_memory_reading_needs_a_clean_exit() -> None:
    pm = PeakMemory("cpu")
    with pytest.raises(RuntimeError):
        _ = pm.reading
