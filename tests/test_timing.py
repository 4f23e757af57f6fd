"""time_fn on a fake clock (exact): calibration, interleaving with the reference, the adaptive
stop, the re-measure policy with a fake probe; the metrics built from a Timing; and a few
short real-clock runs (budget, early stop, the whole default path). Nothing asserts speed."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks._timed import LATENCY_SPECS, latency_metrics
from tasks.instruments import timing
from tasks.instruments.stats import median_ci_rel_half_width, quantile
from tasks.instruments.timing import (
    METHOD,
    Reference,
    Timing,
    resolve_device,
    sync_for,
    time_fn,
)

PLAIN = {"reference": None, "contention": None, "ci_target": None}  # the pre-issue timer


class FakeClock:
    """perf_counter_ns / monotonic that advance only when a workload runs, and check that the
    device was synchronized before every perf_counter_ns read. ``call_ns`` is a constant or a
    function of the call's index; ``log`` records "F" (workload) and "R" (reference) calls."""

    def __init__(self, call_ns: int | Callable[[int], int], ref_ns: int = 0) -> None:
        self.now = 0
        self.call_ns = call_ns
        self.ref_ns = ref_ns
        self.calls = 0
        self.synced = False
        self.reads = 0
        self.log: list[str] = []

    def fn(self) -> None:
        ns = self.call_ns(self.calls) if callable(self.call_ns) else self.call_ns
        self.now += ns
        self.calls += 1
        self.log.append("F")

    def ref(self) -> None:
        self.now += self.ref_ns
        self.log.append("R")

    def sync(self) -> None:
        self.synced = True

    def perf_counter_ns(self) -> int:
        assert self.synced, "clock read without a sync before it"
        self.synced = False
        self.reads += 1
        return self.now

    def monotonic(self) -> float:
        return self.now / 1e9


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeClock]:
    def make(call_ns: int | Callable[[int], int], ref_ns: int = 0) -> FakeClock:
        clock = FakeClock(call_ns, ref_ns)
        monkeypatch.setattr(timing.time, "perf_counter_ns", clock.perf_counter_ns)
        monkeypatch.setattr(timing.time, "monotonic", clock.monotonic)
        return clock

    return make


def test_time_fn_exact_on_fake_clock(fake: Callable[..., FakeClock]) -> None:
    clock = fake(1_000_000)  # 1 ms a call
    t = time_fn(clock.fn, sync=clock.sync, warmup=2, min_sample_s=0.01, n_samples=7, **PLAIN)
    # calibration: 1 call = 1 ms < 10 ms, grow by 10 x 1.2 -> 12 calls = 12 ms >= 10 ms
    assert t.iters == 12
    assert t.samples_s == pytest.approx((0.001,) * 7)
    assert (t.warmup, t.n_requested, t.stopped_early, t.method) == (2, 7, False, METHOD)
    assert clock.reads == 2 * (2 + 7)  # two calibration blocks and seven samples, 2 reads each
    assert t.to_dict()["samples_s"] == list(t.samples_s)
    assert (t.ref_samples_s, t.ci_target, t.ci_met, t.contended, t.attempts) == ((), None, None,
                                                                                 None, 1)


def test_slow_call_needs_one_iteration(fake: Callable[..., FakeClock]) -> None:
    clock = fake(50_000_000)  # 50 ms a call
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.01, n_samples=3, **PLAIN)
    assert t.iters == 1 and t.samples_s == pytest.approx((0.05,) * 3)


def test_reference_is_interleaved_round_by_round(fake: Callable[..., FakeClock]) -> None:
    clock = fake(1_000_000, ref_ns=4_000_000)  # workload 1 ms, reference 4 ms a call
    t = time_fn(clock.fn, sync=clock.sync, warmup=2, min_sample_s=0.01, n_samples=4,
                reference=clock.ref, contention=None, ci_target=None)
    assert (t.iters, t.ref_iters) == (12, 3)  # reference: 1 call 4 ms -> x3 -> 12 ms
    assert t.samples_s == pytest.approx((0.001,) * 4)
    assert t.ref_samples_s == pytest.approx((0.004,) * 4)
    prefix = "FF" + "F" + "F" * 12 + "RRR" + "R" + "R" * 3  # warm-ups, then calibrations
    rounds = ("F" * 12 + "R" * 3) * 4  # workload sample, reference sample, ...
    assert "".join(clock.log) == prefix + rounds
    assert t.ref_method and "interleaved" in t.ref_method
    json.dumps(t.to_dict())  # serialisable


def test_reference_object_uses_its_own_sync(fake: Callable[..., FakeClock]) -> None:
    clock = fake(2_000_000, ref_ns=2_000_000)
    ref_syncs = []

    def ref_sync() -> None:
        ref_syncs.append(1)
        clock.sync()

    ref = Reference(fn=clock.ref, sync=ref_sync, method="test ref")
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=3,
                reference=ref, contention=None, ci_target=None)
    assert t.ref_method == "test ref" and len(t.ref_samples_s) == 3
    assert len(ref_syncs) == 2 * (1 + 3)  # one calibration block and three samples


def test_adaptive_stops_at_first_n_with_ci_met(fake: Callable[..., FakeClock]) -> None:
    clock = fake(1_000_000)  # constant samples: the CI is a point once it exists (n >= 6)
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=3,
                reference=None, contention=None, ci_target=0.02)
    assert len(t.samples_s) == 6 and t.ci_met is True and t.ci_target == 0.02
    clock = fake(1_000_000)
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=9,
                reference=None, contention=None, ci_target=0.02)
    assert len(t.samples_s) == 9 and t.ci_met is True  # n_samples is the minimum


def test_adaptive_stop_is_the_first_n_meeting_the_target(fake: Callable[..., FakeClock]) -> None:
    # wide samples first (1 ms and 1.5 ms alternating), then 1 ms: the CI narrows as n grows
    def call_ns(i: int) -> int:
        return 1_500_000 if (i < 25 and i % 2) else 1_000_000

    clock = fake(call_ns)
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=5,
                reference=None, contention=None, ci_target=0.02, max_samples=200)
    samples = list(t.samples_s)
    assert t.ci_met is True
    assert median_ci_rel_half_width(samples) <= 0.02
    first = next(n for n in range(5, len(samples) + 1)
                 if (w := median_ci_rel_half_width(samples[:n])) is not None and w <= 0.02)
    assert len(samples) == first > 6


def test_adaptive_stops_at_max_samples_when_never_met(fake: Callable[..., FakeClock]) -> None:
    clock = fake(lambda i: 1_000_000 if i % 2 else 2_000_000)  # never narrower than 1 vs 2 ms
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=5,
                reference=None, contention=None, ci_target=0.02, max_samples=30)
    assert len(t.samples_s) == 30 and t.ci_met is False and t.max_samples == 30
    assert not t.stopped_early


def test_adaptive_stops_on_time_cap(fake: Callable[..., FakeClock]) -> None:
    clock = fake(lambda i: 10_000_000 if i % 2 else 20_000_000)  # 10 / 20 ms alternating
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=5,
                reference=None, contention=None, ci_target=0.02, max_samples=1000,
                max_total_s=0.5)
    # calibration 20 ms + 32 samples (10, 20, ... ms) = 500 ms, not yet over; the 33rd passes it
    assert len(t.samples_s) == 33 and t.ci_met is False and not t.stopped_early


def test_gc_is_off_inside_timed_blocks_only(fake: Callable[..., FakeClock]) -> None:
    clock = fake(1_000_000)
    seen: list[bool] = []

    def fn() -> None:
        seen.append(gc.isenabled())
        clock.fn()

    assert gc.isenabled()
    time_fn(fn, sync=clock.sync, warmup=2, min_sample_s=0.001, n_samples=3, **PLAIN)
    assert seen == [True, True] + [False] * 4  # warm-ups collect as usual; blocks do not
    assert gc.isenabled()


class FakeProbe:
    """Scripted contention verdicts per attempt and quiet answers per wait."""

    def __init__(self, verdicts: list[tuple[bool | None, float | None]],
                 quiet: list[bool] | None = None) -> None:
        self.verdicts, self.quiet = verdicts, list(quiet or [])
        self.attempt = -1
        self.calls: list[str] = []

    def start(self) -> int:
        self.attempt += 1
        self.calls.append("start")
        return self.attempt

    def stop(self, before: int) -> dict:
        self.calls.append("stop")
        contended, score = self.verdicts[before]
        return {"contended": contended, "score": score, "reasons": []}

    def wait_for_quiet(self, max_wait_s: float) -> dict:
        self.calls.append("wait")
        return {"quiet": self.quiet.pop(0), "waited_s": 0.5}


def run_with_probe(fake: Callable[..., FakeClock], probe: FakeProbe, **kw: object) -> Timing:
    clock = fake(lambda i: (probe.attempt + 1) * 1_000_000)  # attempt k: (k + 1) ms a call
    return time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.001, n_samples=3,
                   reference=None, ci_target=None, contention=probe, **kw)


def test_quiet_first_attempt_is_not_remeasured(fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(False, 0.1)])
    t = run_with_probe(fake, probe)
    assert probe.calls == ["start", "stop"] and t.attempts == 1 and t.contended is False
    assert t.contention["kept_attempt"] == 0 and t.contention["stop_reason"] == "not contended"


def test_contended_attempt_is_remeasured_after_a_quiet_window(
        fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(True, 3.0), (False, 0.2)], quiet=[True])
    t = run_with_probe(fake, probe)
    assert probe.calls == ["start", "stop", "wait", "start", "stop"]
    assert t.attempts == 2 and t.contended is False and t.contention["kept_attempt"] == 1
    assert t.samples_s == pytest.approx((0.002,) * 3)  # the second attempt's samples
    figs = t.contention["attempts"]
    assert [a["contended"] for a in figs] == [True, False]
    assert [a["median_ms"] for a in figs] == pytest.approx([1.0, 2.0])
    assert t.contention["waits"] == [{"quiet": True, "waited_s": 0.5}]


def test_least_contended_of_all_attempts_is_kept(fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(True, 3.0), (True, 1.5), (True, 2.0)], quiet=[True, True])
    t = run_with_probe(fake, probe)
    assert t.attempts == 3 and t.contended is True and t.contention["kept_attempt"] == 1
    assert t.samples_s == pytest.approx((0.002,) * 3)
    assert "max_attempts" in t.contention["stop_reason"]
    assert t.contention["n_attempts"] == 3 and "rule" in t.contention


def test_no_remeasure_without_a_quiet_window(fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(True, 3.0)], quiet=[False])
    t = run_with_probe(fake, probe)
    assert probe.calls == ["start", "stop", "wait"] and t.attempts == 1 and t.contended is True
    assert "no quiet window" in t.contention["stop_reason"]


def test_max_attempts_one_never_waits(fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(True, 3.0)])
    t = run_with_probe(fake, probe, max_attempts=1)
    assert probe.calls == ["start", "stop"] and t.contended is True


def test_unknown_contention_is_not_remeasured(fake: Callable[..., FakeClock]) -> None:
    probe = FakeProbe([(None, None)])
    t = run_with_probe(fake, probe)
    assert t.attempts == 1 and t.contended is None
    assert "unknown" in t.contention["stop_reason"]


def make_timing(**kw: object) -> Timing:
    base = {"samples_s": (0.002, 0.004, 0.003, 0.003, 0.005, 0.003),
            "iters": 4, "warmup": 3, "n_requested": 5, "stopped_early": False, "total_s": 1.0,
            "method": "m", "ref_samples_s": (0.001, 0.001, 0.002, 0.001, 0.001, 0.002),
            "ref_iters": 9, "ref_method": "ref m", "ci_target": 0.02, "ci_met": False,
            "max_samples": 100, "contended": True,
            "contention": {"attempts": [{"contended": True, "score": 2.0}], "n_attempts": 1},
            "attempts": 1}
    return Timing(**{**base, **kw})


def test_latency_metrics_fields_and_types() -> None:
    t = make_timing()
    lat, tput, vs = latency_metrics(t, 64, {"seq_len": 64})
    assert [m.name for m in (lat, tput, vs)] == [s.name for s in LATENCY_SPECS]
    for m, spec in zip((lat, tput, vs), LATENCY_SPECS, strict=True):
        assert m.unit == spec.unit and m.higher_is_better is spec.higher_is_better
        assert m.status == "ok" and m.extra["seq_len"] == 64
        x = m.extra
        assert isinstance(x["noisy"], bool) and isinstance(x["contended"], bool)
        assert isinstance(x["contention"], dict) and x["contention"]["n_attempts"] == 1
        assert isinstance(x["ref_ms"], float) and isinstance(x["ref_ratio"], float)
        assert isinstance(x["ref_method"], str) and isinstance(x["ci_target"], float)
        assert isinstance(x["ci_met"], bool)
    assert lat.value == pytest.approx(3.0) and lat.extra["ref_ms"] == pytest.approx(1.0)
    assert lat.extra["ref_ratio"] == pytest.approx(3.0)
    json.dumps([m.to_dict() for m in (lat, tput, vs)])


def test_latency_vs_ref_ratio_math() -> None:
    t = make_timing()
    vs = latency_metrics(t, 64, {})[2]
    assert vs.unit == "x reference" and vs.higher_is_better is False
    assert vs.value == pytest.approx(0.003 / 0.001)  # ratio of medians
    ratios = [2.0, 4.0, 1.5, 3.0, 5.0, 1.5]  # sample i of fn / sample i of ref
    assert vs.samples == pytest.approx(ratios)
    assert vs.n_samples == 6 and vs.spread_kind == "iqr"
    assert vs.spread == pytest.approx(quantile(ratios, 0.75) - quantile(ratios, 0.25))
    assert vs.summary["median"] == pytest.approx(2.5)  # the median of the per-round ratios
    assert (vs.summary["ci_low"], vs.summary["ci_high"]) == pytest.approx((1.5, 5.0))
    assert vs.extra["ref_samples_ms"] == pytest.approx([1.0, 1.0, 2.0, 1.0, 1.0, 2.0])
    assert "per-round ratios" in vs.method and "ref m" in vs.method


def test_latency_vs_ref_unavailable_without_reference() -> None:
    t = make_timing(ref_samples_s=(), ref_method=None, contended=None, contention=None)
    lat, _, vs = latency_metrics(t, 8, {})
    assert vs.status == "unavailable" and vs.value is None and "reference" in vs.error
    assert lat.extra["ref_ms"] is None and lat.extra["ref_ratio"] is None
    assert lat.extra["contended"] is None


def test_resolve_device() -> None:
    class Ctx:
        device = "cuda:1"

        def sync(self) -> None:
            return None

    assert resolve_device(sync_for("cpu")) == "cpu"
    assert resolve_device(Ctx().sync) == "cuda:1"  # CellContext.sync: the bound object's device
    assert resolve_device(sync_for("cpu"), device="cuda:0") == "cuda:0"
    assert resolve_device(lambda: None) == "cpu"  # unknown sync, CUDA never initialised


def test_early_stop_keeps_five_samples() -> None:
    t = time_fn(lambda: time.sleep(0.001), warmup=0, min_sample_s=0.0, n_samples=100,
                max_total_s=1e-6, reference=None, contention=None)
    assert len(t.samples_s) == 5 and t.stopped_early and t.n_requested == 100
    t = time_fn(lambda: None, warmup=0, min_sample_s=0.0, n_samples=3, max_total_s=1e-6,
                reference=None, contention=None)
    assert len(t.samples_s) == 3 and not t.stopped_early


def test_early_stop_on_budget() -> None:
    t = time_fn(lambda: time.sleep(0.002), warmup=1, min_sample_s=0.001, n_samples=1000,
                max_total_s=0.1, reference=None, contention=None)
    assert 5 <= len(t.samples_s) < 1000 and t.stopped_early
    assert t.total_s < 1.0
    assert all(0.002 <= s < 0.05 for s in t.samples_s)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        time_fn(lambda: None, n_samples=0, **PLAIN)
    with pytest.raises(ValueError):
        time_fn(lambda: None, max_attempts=0, **PLAIN)
    with pytest.raises(ValueError):
        time_fn(lambda: None, reference="matmul", contention=None)


def test_default_path_with_torch_reference_and_real_probe() -> None:
    """The defaults on this machine: torch reference, /proc probe; short budget, any load."""
    torch = pytest.importorskip("torch")
    x = torch.ones(32, 32)
    t = time_fn(lambda: x @ x, min_sample_s=0.001, n_samples=5, max_total_s=0.2,
                quiet_wait_s=0.1, max_attempts=2)
    assert len(t.ref_samples_s) == len(t.samples_s) >= 5
    assert "256x256" in t.ref_method and "cpu" in t.ref_method
    assert t.contention is not None and 1 <= t.attempts <= 2
    assert t.contention["n_attempts"] == t.attempts == len(t.contention["attempts"])
    if sys.platform.startswith("linux"):
        assert isinstance(t.contended, bool)
        assert t.contention["attempts"][0]["others_cpu_cores"] is not None
    json.dumps(t.to_dict())


def test_prefill_task_reports_declared_metrics() -> None:
    pytest.importorskip("torch")
    import tasks
    from architectures.configs import build_config
    from tasks.instruments.context import CellContext

    task = tasks.get("prefill_latency")
    cfg = build_config(task.config_cls, {"seq_len": 8, "n_samples": 5, "warmup": 1,
                                         "min_sample_s": 0.001, "max_total_s": 0.2,
                                         "max_attempts": 1}, task.name)
    ctx = CellContext(arch="transformer", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    got = task.run(cfg, ctx)
    declared = {m.name: m for m in task.metrics}
    assert {m.name for m in got} == set(declared) and task.headline in declared
    for m in got:
        assert m.status == "ok" and m.unit == declared[m.name].unit
        keys = {"noisy", "contended", "contention", "ref_ms", "ref_ratio", "ref_method",
                "ci_target", "ci_met"}
        assert keys <= set(m.extra), m.name
        assert isinstance(m.extra["ref_ms"], float) and isinstance(m.extra["ci_met"], bool)


def test_sync_for_cpu_is_noop_and_import_is_torch_free() -> None:
    assert sync_for("cpu")() is None
    code = ("import sys, tasks.instruments.timing, tasks.instruments.contention; "
            "sys.exit('torch' in sys.modules or 'pynvml' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_in_processes_forks_only_where_allowed() -> None:
    """A cell process (allow_fork) measures in fresh processes; any other process, such as
    this test runner, which has threads and has run torch ops, measures once, in place."""
    import os
    import subprocess
    import sys

    from tasks.instruments.timing import in_processes

    assert in_processes(3, os.getpid) == [os.getpid()]  # not fork-safe here: once, in place
    code = ("import os; from tasks.instruments import timing; timing.allow_fork(); "
            "pids = timing.in_processes(3, os.getpid); "
            "assert len(set(pids)) == 3 and os.getpid() not in pids, pids; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_in_processes_reports_a_child_failure() -> None:
    import subprocess
    import sys

    code = ("from tasks.instruments import timing; timing.allow_fork()\n"
            "def boom():\n    raise ValueError('inside the child')\n"
            "try:\n    timing.in_processes(2, boom)\n"
            "except RuntimeError as err:\n    assert 'inside the child' in str(err); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
