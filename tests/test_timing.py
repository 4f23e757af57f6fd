"""time_fn on a fake clock (exact) and on the real one (budget, early stop)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import timing
from harness.timing import METHOD, sync_for, time_fn


class FakeClock:
    """perf_counter_ns that advances only when the workload runs, and checks that the
    device was synchronized before every read."""

    def __init__(self, call_ns: int) -> None:
        self.now = 0
        self.call_ns = call_ns
        self.synced = False
        self.reads = 0

    def fn(self) -> None:
        self.now += self.call_ns

    def sync(self) -> None:
        self.synced = True

    def perf_counter_ns(self) -> int:
        assert self.synced, "clock read without a sync before it"
        self.synced = False
        self.reads += 1
        return self.now


def test_time_fn_exact_on_fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(call_ns=1_000_000)  # 1 ms a call
    monkeypatch.setattr(timing.time, "perf_counter_ns", clock.perf_counter_ns)
    t = time_fn(clock.fn, sync=clock.sync, warmup=2, min_sample_s=0.01, n_samples=7)
    # calibration: 1 call = 1 ms < 10 ms, grow by 10 x 1.2 -> 12 calls = 12 ms >= 10 ms
    assert t.iters == 12
    assert t.samples_s == pytest.approx((0.001,) * 7)
    assert (t.warmup, t.n_requested, t.stopped_early, t.method) == (2, 7, False, METHOD)
    assert clock.reads == 2 * (2 + 7)  # two calibration blocks and seven samples, 2 reads each
    assert t.to_dict()["samples_s"] == list(t.samples_s)


def test_slow_call_needs_one_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(call_ns=50_000_000)  # 50 ms a call
    monkeypatch.setattr(timing.time, "perf_counter_ns", clock.perf_counter_ns)
    t = time_fn(clock.fn, sync=clock.sync, warmup=0, min_sample_s=0.01, n_samples=3)
    assert t.iters == 1 and t.samples_s == pytest.approx((0.05,) * 3)


def test_early_stop_keeps_five_samples() -> None:
    t = time_fn(lambda: time.sleep(0.001), warmup=0, min_sample_s=0.0, n_samples=100,
                max_total_s=1e-6)
    assert len(t.samples_s) == 5 and t.stopped_early and t.n_requested == 100
    t = time_fn(lambda: None, warmup=0, min_sample_s=0.0, n_samples=3, max_total_s=1e-6)
    assert len(t.samples_s) == 3 and not t.stopped_early


def test_early_stop_on_budget() -> None:
    t = time_fn(lambda: time.sleep(0.002), warmup=1, min_sample_s=0.001, n_samples=1000,
                max_total_s=0.1)
    assert 5 <= len(t.samples_s) < 1000 and t.stopped_early
    assert t.total_s < 1.0
    assert all(0.002 <= s < 0.05 for s in t.samples_s)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        time_fn(lambda: None, n_samples=0)


def test_sync_for_cpu_is_noop_and_import_is_torch_free() -> None:
    assert sync_for("cpu")() is None
    code = "import sys, harness.timing; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
