"""Contention figures and the rule, on synthetic /proc text and a fake clock (no real load)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tasks.instruments import contention
from tasks.instruments.contention import (
    OTHERS_CPU_CORES_MAX,
    ContentionProbe,
    classify,
    parse_cgroup_throttled_s,
    parse_cpuinfo_mhz,
    parse_proc_stat,
)

TCK = 100


class FakeMachine:
    """A machine whose /proc/stat counters advance by what ``run`` says happened."""

    def __init__(self, n_cpus: int = 2, steal_column: bool = True) -> None:
        self.n_cpus, self.steal_column = n_cpus, steal_column
        self.t = 0.0
        self.self_cpu = 0.0
        # user nice system idle iowait irq softirq steal guest guest_nice
        self.jiffies = {c: [0.0] * 10 for c in range(n_cpus)}
        self.files: dict[str, str] = {}
        self.throttled_usec = 0

    def run(self, seconds: float, ours: float = 0.0, others: float = 0.0,
            steal: float = 0.0, throttled: float = 0.0) -> None:
        """``ours`` / ``others`` in cores, ``steal`` and ``throttled`` as fractions."""
        total = seconds * TCK
        for c in range(self.n_cpus):
            j = self.jiffies[c]
            j[0] += (ours + others) * total / self.n_cpus * 0.75  # user
            j[2] += (ours + others) * total / self.n_cpus * 0.25  # system
            j[7] += steal * total
            j[3] += total - (ours + others) * total / self.n_cpus - steal * total  # idle
        self.self_cpu += ours * seconds
        self.throttled_usec += round(throttled * seconds * 1e6)
        self.t += seconds

    def proc_stat(self) -> str:
        n = 10 if self.steal_column else 7
        lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the aggregate line is ignored
        lines += [f"cpu{c} " + " ".join(str(round(v)) for v in j[:n])
                  for c, j in self.jiffies.items()]
        return "\n".join(lines + ["intr 12 0 0", "ctxt 99"]) + "\n"

    def read_text(self, path: str) -> str:
        if path == "/proc/stat":
            return self.proc_stat()
        if path == "/sys/fs/cgroup/cpu.stat" and "cgroup" in self.files:
            return f"usage_usec 1000\nnr_throttled 0\nthrottled_usec {self.throttled_usec}\n"
        if path in self.files:
            return self.files[path]
        raise FileNotFoundError(path)

    def probe(self, threads: int, **kw: object) -> ContentionProbe:
        args = {"read_text": self.read_text, "clock": lambda: self.t,
                "self_cpu_s": lambda: self.self_cpu, "cpus": lambda: list(range(self.n_cpus)),
                "clk_tck": lambda: TCK, "gpu": None, **kw}
        return ContentionProbe("cpu", threads, **args)  # type: ignore[arg-type]


def window(machine: FakeMachine, threads: int, **run: float) -> dict:
    probe = machine.probe(threads)
    before = probe.start()
    machine.run(**run)  # type: ignore[arg-type]
    return probe.stop(before)


def test_quiet_machine_is_not_contended() -> None:
    m = FakeMachine(n_cpus=2)
    figs = window(m, threads=2, seconds=2.0, ours=2.0)
    assert figs["others_cpu_cores"] == pytest.approx(0.0, abs=0.01)
    assert figs["self_cpu_cores"] == pytest.approx(2.0)
    assert figs["steal_fraction"] == 0.0 and figs["contended"] is False
    assert figs["score"] == pytest.approx(0.0, abs=0.05) and figs["reasons"] == []


def test_a_neighbour_on_our_cores_is_contention() -> None:
    m = FakeMachine(n_cpus=2)
    figs = window(m, threads=2, seconds=2.0, ours=1.5, others=0.5)
    assert figs["others_cpu_cores"] == pytest.approx(0.5, abs=0.01)
    assert figs["busy_cpu_cores"] == pytest.approx(2.0, abs=0.01)
    assert figs["contended"] is True and figs["score"] == pytest.approx(2.0, abs=0.05)
    assert figs["reasons"] == ["others' CPU beyond idle cores 0.50 core > 0.25 core"]


def test_neighbours_on_idle_cores_are_not_contention() -> None:
    m = FakeMachine(n_cpus=4)  # 2 threads leave 2 cores idle
    figs = window(m, threads=2, seconds=1.0, ours=2.0, others=1.5)
    assert figs["free_cores"] == 2 and figs["others_beyond_free_cores"] == 0.0
    assert figs["contended"] is False
    figs = window(m, threads=2, seconds=1.0, ours=2.0, others=2.0)  # 0.0 beyond the free 2
    assert figs["contended"] is False
    figs = window(m, threads=2, seconds=1.0, ours=1.6, others=2.4)
    assert figs["others_beyond_free_cores"] == pytest.approx(0.4, abs=0.01)
    assert figs["contended"] is True


def test_threshold_is_strict() -> None:
    assert classify(OTHERS_CPU_CORES_MAX, 0.0, 0.0)[0] is False
    assert classify(OTHERS_CPU_CORES_MAX + 1e-6, None, None)[0] is True
    assert classify(None, None, None) == (None, None, [])


def test_steal_is_contention() -> None:
    m = FakeMachine(n_cpus=2)
    figs = window(m, threads=2, seconds=1.0, ours=1.9, steal=0.05)
    assert figs["steal_fraction"] == pytest.approx(0.05, abs=0.001)
    assert figs["contended"] is True and any("steal" in r for r in figs["reasons"])


def test_cgroup_throttling_is_contention() -> None:
    m = FakeMachine(n_cpus=2)
    m.files["cgroup"] = "yes"
    m.files["/proc/self/cgroup"] = "0::/\n"
    figs = window(m, threads=2, seconds=2.0, ours=2.0, throttled=0.10)
    assert figs["throttled_fraction"] == pytest.approx(0.10)
    assert figs["contended"] is True and any("throttling" in r for r in figs["reasons"])


def test_cgroup_path_of_this_process_is_read_first() -> None:
    m = FakeMachine()
    m.files["/proc/self/cgroup"] = "0::/user.slice/job-7\n"
    m.files["/sys/fs/cgroup/user.slice/job-7/cpu.stat"] = "throttled_usec 500000\n"
    probe = m.probe(1)
    assert probe.snapshot().throttled_s == pytest.approx(0.5)


def test_missing_proc_gives_none_with_reasons_never_zero() -> None:
    def absent(path: str) -> str:
        raise FileNotFoundError(path)

    t = iter([0.0, 1.0])
    probe = ContentionProbe("cpu", 1, read_text=absent, clock=lambda: next(t),
                            self_cpu_s=lambda: 0.0, cpus=lambda: [0], clk_tck=lambda: TCK,
                            gpu=None)
    figs = probe.stop(probe.start())
    for key in ("busy_cpu_cores", "others_cpu_cores", "steal_fraction", "throttled_fraction",
                "load_avg_after", "cpu_mhz_after"):
        assert figs[key] is None, key
    assert figs["contended"] is None and figs["score"] is None
    assert "/proc/stat" in figs["why"]["cpu"]
    assert {"throttled_fraction", "load_avg", "cpu_mhz", "contended", "gpu"} <= set(figs["why"])


def test_no_affinity_api_is_recorded() -> None:
    def no_affinity() -> list[int]:
        raise OSError("os.sched_getaffinity is not available on this platform")

    m = FakeMachine()
    probe = m.probe(1, cpus=no_affinity)
    assert "sched_getaffinity" in probe.why["cpus"]
    before = probe.start()
    m.run(1.0, ours=1.0, others=0.5)
    figs = probe.stop(before)  # all CPUs counted; no free cores known, so none assumed
    assert figs["cpus"] is None and figs["free_cores"] is None
    assert figs["others_cpu_cores"] == pytest.approx(0.5, abs=0.02)
    assert figs["contended"] is True


def test_old_kernel_without_steal_column() -> None:
    m = FakeMachine(steal_column=False)
    figs = window(m, threads=2, seconds=1.0, ours=1.0, others=1.0)
    assert figs["steal_fraction"] is None and "steal" in figs["why"]["steal_fraction"]
    assert figs["contended"] is True  # the rule still has others' CPU


def test_cpu_clock_prefers_cpufreq_then_cpuinfo() -> None:
    m = FakeMachine(n_cpus=2)
    m.files["/proc/cpuinfo"] = ("processor\t: 0\ncpu MHz\t\t: 2400.5\n\n"
                                "processor\t: 1\ncpu MHz\t\t: 1200.0\n\n"
                                "processor\t: 2\ncpu MHz\t\t: 999.0\n")
    assert m.probe(2).snapshot().cpu_mhz == {0: 2400.5, 1: 1200.0}  # only usable CPUs
    m.files["/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"] = "3000000\n"
    m.files["/sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq"] = "2000000\n"
    snap = m.probe(2).snapshot()
    assert snap.cpu_mhz == {0: 3000.0, 1: 2000.0}
    figs = window(m, threads=2, seconds=1.0, ours=2.0)
    assert figs["cpu_mhz_after"] == {"min": 2000.0, "mean": 2500.0, "max": 3000.0, "n": 2,
                                     "per_cpu": {"0": 3000.0, "1": 2000.0}}


def test_load_average_is_recorded() -> None:
    m = FakeMachine()
    m.files["/proc/loadavg"] = "1.50 0.75 0.25 3/120 4242\n"
    figs = window(m, threads=1, seconds=1.0, ours=1.0)
    assert figs["load_avg_before"] == [1.5, 0.75, 0.25] == figs["load_avg_after"]


def test_gpu_figures_are_recorded_not_ruled() -> None:
    m = FakeMachine()
    reads = iter([{"util_pct": 0, "sm_clock_mhz": 1980, "other_processes": 0},
                  {"util_pct": 97, "sm_clock_mhz": 1410, "other_processes": 1}])
    probe = ContentionProbe("cuda:0", 1, read_text=m.read_text, clock=lambda: m.t,
                            self_cpu_s=lambda: m.self_cpu, cpus=lambda: [0, 1],
                            clk_tck=lambda: TCK, gpu=lambda: next(reads))
    before = probe.start()
    m.run(1.0, ours=1.0)
    figs = probe.stop(before)
    assert figs["gpu_before"]["sm_clock_mhz"] == 1980 and figs["gpu_after"]["util_pct"] == 97
    assert figs["contended"] is False  # GPU figures do not enter the rule


def test_gpu_unavailable_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    m = FakeMachine()
    probe = m.probe(1, gpu="auto")  # a CPU device: no GPU probe, and the reason says so
    assert probe.why == {"gpu": "device is cpu, not CUDA"}
    probe = ContentionProbe("cuda:0", 1, read_text=m.read_text, clock=lambda: m.t,
                            self_cpu_s=lambda: 0.0, cpus=lambda: [0], clk_tck=lambda: TCK)
    assert probe.why["gpu"].startswith("NVML unavailable: ModuleNotFoundError")
    assert "pynvml" in probe.why["gpu"]
    figs = probe.stop(probe.start())
    assert figs["gpu_after"] is None and figs["why"]["gpu"].startswith("NVML unavailable")
    cpu_figs = window(m, threads=1, seconds=1.0, ours=1.0)
    assert cpu_figs["why"]["gpu"] == "no GPU probe requested"


def test_gpu_reader_failure_is_a_reason() -> None:
    m = FakeMachine()

    def broken() -> dict:
        raise RuntimeError("NVML_ERROR_GPU_IS_LOST")

    probe = m.probe(1, gpu=broken)
    figs = probe.stop(probe.start())
    assert figs["gpu_after"] is None and "GPU_IS_LOST" in figs["why"]["gpu"]


def scripted_sleep(m: FakeMachine, others: Iterator[float]):
    def sleep(s: float) -> None:
        m.run(s, others=next(others))

    return sleep


def test_wait_for_quiet_returns_at_the_first_quiet_window() -> None:
    m = FakeMachine(n_cpus=2)
    probe = m.probe(2, sleep=scripted_sleep(m, iter([1.0, 0.6, 0.1, 1.0])))
    got = probe.wait_for_quiet(5.0, poll_s=0.5)
    assert got["quiet"] is True and got["polls"] == 3 and got["waited_s"] == pytest.approx(1.5)
    assert got["last"]["others_cpu_cores"] == pytest.approx(0.1, abs=0.02)


def test_wait_for_quiet_gives_up_after_max_wait() -> None:
    m = FakeMachine(n_cpus=2)
    probe = m.probe(2, sleep=scripted_sleep(m, iter([2.0] * 100)))
    got = probe.wait_for_quiet(2.0, poll_s=0.5)
    assert got["quiet"] is False and got["polls"] == 4 and got["waited_s"] == pytest.approx(2.0)


def test_wait_for_quiet_without_inputs_says_unknown() -> None:
    def absent(path: str) -> str:
        raise FileNotFoundError(path)

    clock = [0.0]
    probe = ContentionProbe("cpu", 1, read_text=absent, clock=lambda: clock[0],
                            self_cpu_s=lambda: 0.0, cpus=lambda: [0], clk_tck=lambda: TCK,
                            gpu=None, sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    assert probe.wait_for_quiet(3.0)["quiet"] is None


def test_parsers() -> None:
    text = "cpu  9 9 9 9\ncpu0 1 2 3 4 5 6 7 8 0 0\ncpu3 10 0 0 5\nintr 1\n"
    assert parse_proc_stat(text) == {0: (1, 2, 3, 4, 5, 6, 7, 8, 0, 0), 3: (10, 0, 0, 5)}
    assert parse_proc_stat(text, [3]) == {3: (10, 0, 0, 5)}
    with pytest.raises(LookupError):
        parse_proc_stat(text, [1])
    assert parse_cpuinfo_mhz("processor : 0\ncpu MHz : 1.5\n") == {0: 1.5}
    with pytest.raises(LookupError):
        parse_cpuinfo_mhz("processor : 0\nBogoMIPS : 50\n")  # ARM: no clock here
    assert parse_cgroup_throttled_s("throttled_usec 2500000\n") == 2.5
    assert parse_cgroup_throttled_s("nr_throttled 1\nthrottled_time 3000000000\n") == 3.0
    with pytest.raises(LookupError):
        parse_cgroup_throttled_s("usage_usec 1\n")


def test_real_probe_on_this_platform() -> None:
    """Whatever this machine's load, the figures are numbers or None with a reason."""
    probe = ContentionProbe("cpu", 1)
    figs = probe.stop(probe.start())
    assert figs["contended"] in (True, False, None)
    for key in ("others_cpu_cores", "steal_fraction", "throttled_fraction"):
        assert figs[key] is not None or figs["why"], key
    if sys.platform.startswith("linux"):
        assert figs["cpus"] and figs["busy_cpu_cores"] is not None
    assert contention.RULE.startswith("contended if")


def test_nvml_reader_against_a_fake_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import types

    class Proc:
        def __init__(self, pid: int) -> None:
            self.pid = pid

    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=1, inits=[],
        nvmlInit=lambda: fake.inits.append(1),
        nvmlDeviceGetHandleByIndex=lambda i: ("handle", i),
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=42, memory=7),
        nvmlDeviceGetClockInfo=lambda h, kind: 1755 if kind == 1 else 0,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [Proc(os.getpid()), Proc(1)],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    reader = contention.NvmlReader("cuda:1")
    assert reader.handle == ("handle", 5)  # mapped through CUDA_VISIBLE_DEVICES
    assert reader() == {"util_pct": 42, "sm_clock_mhz": 1755, "other_processes": 1}

    def lost(h: object) -> list:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    fake.nvmlDeviceGetComputeRunningProcesses = lost
    got = reader()
    assert got["other_processes"] is None and "NOT_SUPPORTED" in got["why"]["other_processes"]
    assert got["util_pct"] == 42
