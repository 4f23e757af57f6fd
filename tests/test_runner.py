"""Runner: isolated cells, soft failure, resume after a kill, provenance on every row."""

from __future__ import annotations

import os
import signal
import statistics
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


@pytest.mark.slow
def test_failing_variant_yields_failed_rows_and_others_complete(
        tmp_path: Path, db_url: str, broken_plugin: Path) -> None:
    suite_path = write_suite(tmp_path / "mixed.yaml", ["exploding", "transformer"])
    code = main(["--db", db_url, "--plugin", str(broken_plugin), "run", "--suite",
                 str(suite_path), "--no-progress"])
    assert code == 1  # the exit-code policy: a failed cell makes the run exit 1
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


@pytest.mark.slow
def test_timed_rows_carry_statistics_and_raw_samples(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "one.yaml", ["transformer"],
                             {"prefill_latency": {"seq_len": 16, "n_samples": 7, "warmup": 1,
                                                  "min_sample_s": 0.001}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--no-progress"]) == 0
    (lat,) = [r for r in db.results(db.connect(db_url)) if r["metric"] == "latency_ms"]
    samples = sorted(lat["samples"])
    assert lat["n_samples"] == len(samples) >= 7  # n_samples is the least; sampling adapts
    assert lat["value"] == pytest.approx(statistics.median(samples))
    assert lat["spread_kind"] == "iqr" and lat["spread"] >= 0
    assert lat["ci_low"] <= lat["value"] <= lat["ci_high"]
    assert (lat["p99"] is None) == (lat["n_samples"] < 100)  # a p99 needs 100 samples
    assert lat["extra"]["processes"] == 5  # pooled over fresh processes
    assert len(lat["extra"]["contention"]["processes"]) == 5
    assert lat["kernel_path"] and lat["threads"] == 1


@pytest.mark.slow
def test_timeout_is_recorded(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "slow.yaml", ["transformer"],
                             {"prefill_latency": {"seq_len": 16, "n_samples": 500,
                                                  "max_total_s": 60}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--timeout", "0.5",
                 "--no-progress", "--allow-failures"]) == 0
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sweep_stops_a_series_after_a_timeout(tmp_path: Path, db_url: str) -> None:
    suite_path = write_suite(tmp_path / "sweep.yaml", ["transformer"],
                             {"prefill_latency": {"n_samples": 500, "max_total_s": 60,
                                                  "sweep": {"seq_len": [8, 16, 32]}}})
    assert main(["--db", db_url, "run", "--suite", str(suite_path), "--timeout", "0.3",
                 "--no-progress"]) == 1
    rows = sorted(db.results(db.connect(db_url)), key=lambda r: r["task_config"]["seq_len"])
    assert [r["status"] for r in rows] == ["timeout", "skipped", "skipped"]
    assert "seq_len=8" in rows[1]["error"]


@pytest.mark.slow
def test_parallel_jobs_overlap_accuracy_cells_and_keep_efficiency_cells_alone(
        tmp_path: Path) -> None:
    from harness import plan, runner, suite

    tiny_train = {"steps": 3, "train_size": 200, "test_size": 50, "val_size": 20,
                  "batch_size": 8}
    path = write_suite(tmp_path / "par.yaml", ["transformer", "lstm"], {
        "mqar": {**tiny_train, "seq_len": 12, "n_pairs": 4}, "parity": {**tiny_train, "n_bits": 10},
        "prefill_latency": {"seq_len": 16, "n_samples": 3, "warmup": 1,
                            "min_sample_s": 0.001, "max_total_s": 1.0}})
    cells = plan.plan(suite.load(str(path)))
    values = {}
    for jobs in (1, 2):
        engine = db.connect(f"sqlite:///{tmp_path / f'j{jobs}.db'}")
        events: list[tuple[str, str]] = []
        report = runner.run(cells, engine, suite_name="par", timeout_s=120,
                            headlines={"mqar": "accuracy", "parity": "accuracy",
                                       "prefill_latency": "latency_ms"},
                            on_start=lambda c, ev=events: ev.append(("start", c.task)),
                            on_done=lambda o, ev=events: ev.append(("done", o.cell.task)),
                            jobs=jobs)
        assert report.statuses == {"ok": 6}, [o.error for o in report.outcomes]
        rows = db.results(engine)
        values[jobs] = {(r["cell_id"], r["metric"]): r["value"] for r in rows
                        if r["task"] != "prefill_latency"}
        first_done = events.index(next(e for e in events if e[0] == "done"))
        if jobs == 2:  # two cells were running before the first finished
            assert [e[0] for e in events[:first_done]] == ["start", "start"]
        # every prefill cell starts after the last accuracy cell is done, and runs alone
        timed = [i for i, e in enumerate(events) if e[1] == "prefill_latency"]
        last_acc = max(i for i, e in enumerate(events) if e[1] != "prefill_latency")
        assert min(timed) > last_acc
        assert [events[i][0] for i in timed] == ["start", "done"] * 2
    assert values[1] == values[2]  # same cells, same results, whichever way they ran


@pytest.mark.slow
def test_bad_jobs_value_is_one_line_error(tmp_path: Path, capsys, db_url: str) -> None:
    path = write_suite(tmp_path / "s.yaml", ["transformer"])
    assert main(["--db", db_url, "run", "--suite", str(path), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--jobs" in err and len(err.splitlines()) == 1
