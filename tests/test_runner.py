"""Runner: isolated cells, soft failure, resume after a kill, provenance on every row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from harness import db
from harness.cli import main
from tests.conftest import write_suite

PROVENANCE = ("run_id", "code_version", "cell_id", "config_hash", "arch", "arch_config",
              "task", "task_config", "seed", "metric", "status", "hardware_fingerprint",
              "device", "dtype", "threads")


def test_failing_variant_yields_failed_rows_and_others_complete(
        tmp_path: Path, db_url: str, broken_plugin: Path) -> None:
    suite_path = write_suite(tmp_path / "mixed.yaml", ["exploding", "transformer"])
    code = main(["--db", db_url, "--plugin", str(broken_plugin), "run", "--suite",
                 str(suite_path), "--no-progress"])
    assert code == 0
    rows = db.results(db.connect(db_url))
    by_arch: dict[str, list[dict]] = {}
    for r in rows:
        by_arch.setdefault(r["arch"], []).append(r)
    failed = by_arch["exploding"]
    assert {r["task"] for r in failed} == {"prefill_latency", "peak_memory"}
    assert all(r["status"] == "failed" and r["value"] is None for r in failed)
    assert all("deliberate failure inside the exploding mixer" in r["error"] for r in failed)
    ok = [r for r in by_arch["transformer"] if r["metric"] in ("latency_ms", "peak_memory_mib")]
    assert {r["task"] for r in ok} == {"prefill_latency", "peak_memory"}
    assert all(r["status"] == "ok" and r["value"] > 0 for r in ok)
    for r in rows:
        for col in PROVENANCE:
            assert r[col] not in (None, ""), (col, r)
        if r["status"] == "ok":  # measured rows also say how
            assert r["unit"] and r["method"], r


def test_timed_rows_carry_statistics_and_raw_samples(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "one.yaml", ["transformer"],
                             {"prefill_latency": {"seq_len": 16, "n_samples": 7, "warmup": 1,
                                                  "min_sample_s": 0.001}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--no-progress"]) == 0
    (lat,) = [r for r in db.results(db.connect(db_url)) if r["metric"] == "latency_ms"]
    samples = sorted(lat["samples"])
    assert lat["n_samples"] == len(samples) == 7
    assert lat["value"] == pytest.approx(samples[3])  # the median of 7 samples
    assert lat["spread_kind"] == "iqr" and lat["spread"] >= 0
    assert lat["ci_low"] <= lat["value"] <= lat["ci_high"]
    assert lat["p99"] is None  # 7 samples cannot support a p99
    assert lat["kernel_path"] and lat["threads"] == 1


def test_timeout_is_recorded(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "slow.yaml", ["transformer"],
                             {"prefill_latency": {"seq_len": 16, "n_samples": 5}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--timeout", "0.5",
                 "--no-progress"]) == 0
    (row,) = db.results(db.connect(db_url))
    assert row["status"] == "timeout" and "timeout" in row["error"]


def _ok_cells(url: str) -> dict[str, set[str]]:
    engine = db.connect(url)
    with engine.connect() as conn:
        got = conn.execute(text(
            "SELECT cell_id, run_id FROM results WHERE status = 'ok'")).all()
    runs: dict[str, set[str]] = {}
    for cell_id, run_id in got:
        runs.setdefault(cell_id, set()).add(run_id)
    return runs


def test_killed_run_resumes_without_remeasuring(tmp_path: Path, db_url: str) -> None:
    archs = ["transformer", "linear_attention", "mamba", "hybrid"]
    suite_path = write_suite(tmp_path / "resume.yaml", archs,
                             {"prefill_latency": {"seq_len": 16, "n_samples": 5, "warmup": 1,
                                                  "min_sample_s": 0.001}})
    cmd = [sys.executable, "-m", "harness.cli", "--db", db_url, "run", "--suite",
           str(suite_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _ok_cells(db_url):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # the harshest interruption: no cleanup at all
    proc.wait()
    first = _ok_cells(db_url)
    assert 1 <= len(first) < len(archs), f"kill should land midway: {first}"

    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--no-progress"]) == 0
    second = _ok_cells(db_url)
    rows = db.results(db.connect(db_url))
    summary = [(r["arch"], r["metric"], r["status"], r["run_id"]) for r in rows]
    assert len(second) == len(archs), summary  # nothing lost
    assert all(len(runs) == 1 for runs in second.values()), summary  # nothing measured twice
    for cell_id, runs in first.items():
        assert second[cell_id] == runs  # finished cells kept from the first run

    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--no-progress"]) == 0
    assert _ok_cells(db_url) == second  # a third run has nothing to do


def test_sweep_stops_a_series_after_a_timeout(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "sweep.yaml", ["transformer"],
                             {"prefill_latency": {"sweep": {"seq_len": [8, 16, 32]}}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--timeout", "0.3",
                 "--no-progress"]) == 0
    rows = sorted(db.results(db.connect(db_url)), key=lambda r: r["task_config"]["seq_len"])
    assert [r["status"] for r in rows] == ["timeout", "skipped", "skipped"]
    assert "seq_len=8" in rows[1]["error"]
