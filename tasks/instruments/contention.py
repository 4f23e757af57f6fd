"""Was the machine quiet while we timed? Contention figures around one timed measurement.

A latency read on a machine that other processes share says as much about them as about the
workload, so every timed measurement is bracketed by two snapshots of the machine's state and
the window between them is reduced to a few figures and one flag, ``contended``.

Figures (Linux; a figure the platform cannot give is None and ``why`` says why, never 0):

- ``others_cpu_cores``: CPU that processes other than this one used on the CPUs this process
  may run on, averaged over the window, in cores: busy jiffies (user + nice + system + irq +
  softirq) of those CPUs (``/proc/stat`` per-CPU lines, restricted to ``sched_getaffinity``)
  minus this process's own CPU time (``getrusage(RUSAGE_SELF)``: all its threads), over the
  window's wall time. Tick rounding (1/CLK_TCK per CPU at each end) can push it a little
  below zero; it is clipped at 0 (``busy_cpu_cores`` and ``self_cpu_cores`` keep the raw
  parts).
- ``steal_fraction``: steal jiffies / all jiffies of those CPUs: time a hypervisor ran another
  guest while this one's virtual CPUs wanted to run.
- ``throttled_fraction``: cgroup CPU-quota throttling over the window (``cpu.stat``:
  ``throttled_usec`` in cgroup v2, ``throttled_time`` in ns in v1) / wall time.
- load average before and after (``/proc/loadavg``; it lags by a minute and counts us, so it
  is context, not evidence), per-CPU clock before and after (sysfs ``scaling_cur_freq``,
  else ``/proc/cpuinfo`` "cpu MHz"), summarised as min / mean / max (per CPU up to 16 CPUs).
- CUDA devices: GPU utilisation, SM clock and the number of other compute processes on the
  device, before and after, through NVML (``pynvml``, optional). These are recorded but not
  used by the rule: utilisation while we measure is mostly our own kernels and NVML cannot
  split it by process, and an idle process that merely holds the device is not contention.
  A slower GPU shows in the reference-normalised latency instead (``tasks.instruments.timing``).

Rule (``classify``): contended when any of

- ``others_cpu_cores - free_cores > OTHERS_CPU_CORES_MAX``, where ``free_cores`` = usable CPUs
  minus the threads the measurement uses: neighbours on cores we leave idle cost us little,
  neighbours beyond them take time from our threads;
- ``steal_fraction > STEAL_FRACTION_MAX``;
- ``throttled_fraction > THROTTLED_FRACTION_MAX``.

``score`` is the largest figure / threshold ratio (> 1: contended) and orders attempts by how
contended they were. ``contended`` is None when none of the rule's inputs could be read.
Importing this module imports neither torch nor pynvml.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.instruments.hardware import cuda_index, nvml_index

# A quarter of a core beyond the idle ones: at 2 threads that is ~12% of the CPU time our
# threads want, far more than the 2% precision the adaptive sampler aims for (timing.CI_TARGET).
OTHERS_CPU_CORES_MAX = 0.25
# Time the hypervisor or the cgroup quota takes away is lost to the measurement outright; above
# the 2% precision target it can move a median by more than the CI we ask for.
STEAL_FRACTION_MAX = 0.02
THROTTLED_FRACTION_MAX = 0.02
QUIET_POLL_S = 0.5  # one window of wait_for_quiet: 50 ticks per CPU at CLK_TCK 100
PER_CPU_LIMIT = 16  # per-CPU clocks are stored individually up to this many CPUs

RULE = (f"contended if others' CPU beyond the cores the measurement leaves idle > "
        f"{OTHERS_CPU_CORES_MAX} core, or steal > {STEAL_FRACTION_MAX:.0%}, or cgroup "
        f"throttling > {THROTTLED_FRACTION_MAX:.0%} of the window (Linux /proc, getrusage)")

_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (guest time is inside user/nice)
_STEAL_FIELD = 7
_CGROUP_STAT_PATHS = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpu,cpuacct/cpu.stat",
                      "/sys/fs/cgroup/cpu/cpu.stat")


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _self_cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (children excluded)."""
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    except ImportError:  # not POSIX: os.times covers the whole process too
        t = os.times()
        return t.user + t.system


def _affinity() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    raise OSError("os.sched_getaffinity is not available on this platform")


def _clk_tck() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


@dataclass
class Snapshot:
    """Raw readings at one instant; a None field has its reason in ``why``."""

    t: float
    jiffies: dict[int, tuple[int, ...]] | None = None  # per usable CPU, /proc/stat fields
    self_cpu_s: float | None = None
    loadavg: list[float] | None = None
    cpu_mhz: dict[int, float] | None = None
    throttled_s: float | None = None
    gpu: dict[str, Any] | None = None
    why: dict[str, str] = field(default_factory=dict)


def parse_proc_stat(text: str, cpus: list[int] | None = None) -> dict[int, tuple[int, ...]]:
    """Per-CPU jiffy counters from ``/proc/stat`` text (``cpuN`` lines), only ``cpus`` if given."""
    out: dict[int, tuple[int, ...]] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head.startswith("cpu") and head[3:].isdigit():
            cpu = int(head[3:])
            if cpus is None or cpu in cpus:
                out[cpu] = tuple(int(v) for v in rest.split())
    if not out:
        raise LookupError("no per-CPU lines for the usable CPUs in /proc/stat")
    return out


def parse_cpuinfo_mhz(text: str) -> dict[int, float]:
    """``processor`` -> ``cpu MHz`` from ``/proc/cpuinfo`` text (x86 reports it; ARM does not)."""
    out: dict[int, float] = {}
    cpu: int | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "processor":
            cpu = int(value.strip())
        elif key == "cpu MHz" and cpu is not None:
            out[cpu] = float(value.strip())
    if not out:
        raise LookupError("no 'cpu MHz' lines in /proc/cpuinfo")
    return out


def parse_cgroup_throttled_s(text: str) -> float:
    """Throttled seconds from a cgroup ``cpu.stat`` (v2 ``throttled_usec``, v1 ``throttled_time``
    in ns)."""
    values = dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)
    if "throttled_usec" in values:
        return int(values["throttled_usec"]) / 1e6
    if "throttled_time" in values:
        return int(values["throttled_time"]) / 1e9
    raise LookupError("cpu.stat has neither throttled_usec nor throttled_time")


class NvmlReader:
    """GPU utilisation (%), SM clock (MHz) and other compute processes of one CUDA device."""

    def __init__(self, device: str) -> None:
        import pynvml  # optional; ImportError is reported by the probe as the reason

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(cuda_index(device)))

    def __call__(self) -> dict[str, Any]:
        nv, h = self.nvml, self.handle
        out: dict[str, Any] = {}
        for key, read in (
            ("util_pct", lambda: int(nv.nvmlDeviceGetUtilizationRates(h).gpu)),
            ("sm_clock_mhz", lambda: int(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))),
            # In a PID namespace NVML reports host PIDs, so this process may count itself here.
            ("other_processes", lambda: sum(p.pid != os.getpid() for p in
                                            nv.nvmlDeviceGetComputeRunningProcesses(h))),
        ):
            try:
                out[key] = read()
            except Exception as err:  # noqa: BLE001 - any NVML failure is recorded, not raised
                out[key] = None
                out.setdefault("why", {})[key] = _why(err)
        return out


def _mhz_summary(mhz: dict[int, float] | None) -> dict[str, Any] | None:
    if not mhz:
        return None
    values = list(mhz.values())
    out: dict[str, Any] = {"min": min(values), "mean": round(sum(values) / len(values), 1),
                           "max": max(values), "n": len(values)}
    if len(values) <= PER_CPU_LIMIT:
        out["per_cpu"] = {str(cpu): v for cpu, v in sorted(mhz.items())}
    return out


def classify(others_excess_cores: float | None, steal_fraction: float | None,
             throttled_fraction: float | None) -> tuple[bool | None, float | None, list[str]]:
    """(contended, score, reasons) by the module's rule; (None, None, []) without inputs."""
    checks = [(others_excess_cores, OTHERS_CPU_CORES_MAX, "others' CPU beyond idle cores",
               "{:.2f} core"),
              (steal_fraction, STEAL_FRACTION_MAX, "steal", "{:.1%}"),
              (throttled_fraction, THROTTLED_FRACTION_MAX, "cgroup throttling", "{:.1%}")]
    ratios, reasons = [], []
    for value, limit, label, fmt in checks:
        if value is None:
            continue
        ratios.append(value / limit)
        if value > limit:
            reasons.append(f"{label} {fmt.format(value)} > {fmt.format(limit)}")
    if not ratios:
        return None, None, []
    return bool(reasons), round(max(ratios), 4), reasons


class ContentionProbe:
    """Snapshots of the machine's state and the contention figures of the window between two.

    Every reader is injectable, so tests run on synthetic ``/proc`` text and fake clocks:
    ``read_text(path) -> str`` (raises OSError when absent), ``clock() -> s`` (default
    ``time.monotonic``), ``self_cpu_s() -> s``, ``cpus() -> usable CPU ids``,
    ``clk_tck() -> ticks/s``, ``gpu() -> dict`` (None: no GPU probe; ``"auto"``: NVML for a
    CUDA ``device``) and ``sleep(s)`` for ``wait_for_quiet`` (default ``time.sleep``).
    """

    def __init__(self, device: str = "cpu", threads: int = 1, *,
                 read_text: Callable[[str], str] = _read_text,
                 clock: Callable[[], float] | None = None,
                 self_cpu_s: Callable[[], float] = _self_cpu_s,
                 cpus: Callable[[], list[int]] = _affinity,
                 clk_tck: Callable[[], int] = _clk_tck,
                 gpu: Callable[[], dict[str, Any]] | str | None = "auto",
                 sleep: Callable[[float], None] | None = None) -> None:
        self.device, self.threads = device, max(0, int(threads))
        self.read_text, self.self_cpu = read_text, self_cpu_s
        # looked up at call time, so a clock patched elsewhere (tests) is never captured
        self.clock = clock or (lambda: time.monotonic())
        self.sleep = sleep or (lambda s: time.sleep(s))
        self.why: dict[str, str] = {}
        try:
            self.cpus: list[int] | None = list(cpus())
        except Exception as err:  # noqa: BLE001
            self.cpus, self.why["cpus"] = None, _why(err)
        try:
            self.tck: int | None = int(clk_tck())
        except Exception as err:  # noqa: BLE001
            self.tck, self.why["clk_tck"] = None, _why(err)
        self.gpu: Callable[[], dict[str, Any]] | None = None
        if gpu == "auto":
            if device.startswith("cuda"):
                try:
                    self.gpu = NvmlReader(device)
                except Exception as err:  # noqa: BLE001 - ImportError, NVMLError, ...
                    self.why["gpu"] = f"NVML unavailable: {_why(err)}"
            else:
                self.why["gpu"] = f"device is {device}, not CUDA"
        elif callable(gpu):
            self.gpu = gpu
        else:
            self.why["gpu"] = "no GPU probe requested"

    # -- one instant -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        snap = Snapshot(t=self.clock(), why=dict(self.why))

        def attempt(name: str, read: Callable[[], Any]) -> Any:
            try:
                return read()
            except Exception as err:  # noqa: BLE001 - a missing figure is recorded, not raised
                snap.why[name] = _why(err)
                return None

        snap.jiffies = attempt("jiffies", lambda: parse_proc_stat(
            self.read_text("/proc/stat"), self.cpus))
        snap.self_cpu_s = attempt("self_cpu_s", self.self_cpu)
        snap.loadavg = attempt("loadavg", lambda: [
            float(v) for v in self.read_text("/proc/loadavg").split()[:3]])
        snap.cpu_mhz = attempt("cpu_mhz", self._cpu_mhz)
        snap.throttled_s = attempt("throttled_s", self._throttled_s)
        if self.gpu is not None:
            snap.gpu = attempt("gpu", self.gpu)
        return snap

    def _cpu_mhz(self) -> dict[int, float]:
        if self.cpus:
            try:
                return {c: int(self.read_text(
                    f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")) / 1000
                    for c in self.cpus}
            except (OSError, ValueError):
                pass  # no cpufreq (VMs, containers): fall back to /proc/cpuinfo
        mhz = parse_cpuinfo_mhz(self.read_text("/proc/cpuinfo"))
        mhz = {c: v for c, v in mhz.items() if self.cpus is None or c in self.cpus}
        if not mhz:
            raise LookupError("/proc/cpuinfo has no clock for the usable CPUs")
        return mhz

    def _throttled_s(self) -> float:
        paths = list(_CGROUP_STAT_PATHS)
        try:  # cgroup v2: this process's own group, as /proc/self/cgroup names it
            for line in self.read_text("/proc/self/cgroup").splitlines():
                if line.startswith("0::"):
                    paths.insert(0, "/sys/fs/cgroup" + line[3:].rstrip("/") + "/cpu.stat")
        except OSError:
            pass
        errors = []
        for path in paths:
            try:
                return parse_cgroup_throttled_s(self.read_text(path))
            except (OSError, LookupError, ValueError) as err:
                errors.append(f"{path}: {_why(err)}")
        raise LookupError("no cgroup CPU throttling counter: " + "; ".join(errors[:2]))

    # -- a window ----------------------------------------------------------------------------
    def window(self, before: Snapshot, after: Snapshot) -> dict[str, Any]:
        """Contention figures over [before, after] and the rule's verdict (JSON-serialisable)."""
        why: dict[str, str] = {}
        wall = after.t - before.t
        n_cpus = len(self.cpus) if self.cpus is not None else None
        free = max(0, n_cpus - self.threads) if n_cpus is not None else None
        figs: dict[str, Any] = {"window_s": round(wall, 4), "cpus": n_cpus,
                                "threads": self.threads, "free_cores": free}
        busy = self_cores = others = excess = steal = throttled = None
        if wall <= 0:
            why["window"] = f"empty window ({wall} s)"
        elif before.jiffies is None or after.jiffies is None or self.tck is None:
            why["cpu"] = (after.why.get("jiffies") or before.why.get("jiffies")
                          or self.why.get("clk_tck") or "no /proc/stat")
        else:
            deltas = [tuple(a - b for a, b in zip(after.jiffies[c], before.jiffies[c],
                                                  strict=False))  # same kernel: same length
                      for c in after.jiffies if c in before.jiffies]
            busy = sum(d[i] for d in deltas for i in _BUSY_FIELDS if i < len(d)) / self.tck / wall
            total = sum(sum(d[:8]) for d in deltas)
            if all(len(d) > _STEAL_FIELD for d in deltas):
                steal = sum(d[_STEAL_FIELD] for d in deltas) / total if total > 0 else 0.0
            else:
                why["steal_fraction"] = "this kernel's /proc/stat has no steal column"
            if before.self_cpu_s is None or after.self_cpu_s is None:
                why["others_cpu_cores"] = after.why.get("self_cpu_s") or "own CPU time unread"
            else:
                self_cores = (after.self_cpu_s - before.self_cpu_s) / wall
                others = max(0.0, busy - self_cores)
                excess = max(0.0, others - (free or 0))
        if wall > 0 and before.throttled_s is not None and after.throttled_s is not None:
            throttled = max(0.0, after.throttled_s - before.throttled_s) / wall
        elif wall > 0:
            why["throttled_fraction"] = (after.why.get("throttled_s")
                                         or before.why.get("throttled_s") or "unread")
        contended, score, reasons = classify(excess, steal, throttled)

        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        figs.update({
            "busy_cpu_cores": r(busy), "self_cpu_cores": r(self_cores),
            "others_cpu_cores": r(others), "others_beyond_free_cores": r(excess),
            "steal_fraction": r(steal), "throttled_fraction": r(throttled),
            "load_avg_before": before.loadavg, "load_avg_after": after.loadavg,
            "cpu_mhz_before": _mhz_summary(before.cpu_mhz),
            "cpu_mhz_after": _mhz_summary(after.cpu_mhz),
            "gpu_before": before.gpu, "gpu_after": after.gpu,
            "contended": contended, "score": score, "reasons": reasons,
        })
        if after.loadavg is None:
            why["load_avg"] = after.why.get("loadavg", "unread")
        if after.cpu_mhz is None:
            why["cpu_mhz"] = after.why.get("cpu_mhz", "unread")
        if after.gpu is None:
            why["gpu"] = after.why.get("gpu") or self.why.get("gpu", "not probed")
        if contended is None:
            why["contended"] = "none of the rule's inputs could be read"
        figs["why"] = why
        return figs

    def start(self) -> Snapshot:
        return self.snapshot()

    def stop(self, before: Snapshot) -> dict[str, Any]:
        return self.window(before, self.snapshot())

    def wait_for_quiet(self, max_wait_s: float, poll_s: float = QUIET_POLL_S) -> dict[str, Any]:
        """Poll windows of ``poll_s`` (this process idle) until one is not contended by the same
        rule, or ``max_wait_s`` has passed. ``quiet`` is None when the rule has no inputs."""
        t0 = self.clock()
        polls = 0
        while True:
            before = self.snapshot()
            self.sleep(poll_s)
            figs = self.window(before, self.snapshot())
            polls += 1
            waited = round(self.clock() - t0, 3)
            last = {k: figs[k] for k in ("others_cpu_cores", "steal_fraction", "score")}
            if figs["contended"] is not True:
                quiet = None if figs["contended"] is None else True
                return {"quiet": quiet, "waited_s": waited, "polls": polls, "last": last}
            if waited >= max_wait_s:
                return {"quiet": False, "waited_s": waited, "polls": polls, "last": last}
