"""harness.results: load() and rows() select the right result rows, with typed columns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import update

from harness import db, results
from tests.test_site import _row

OLD = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)


def make_db(url: str, fp: str = "fp0", run_a: str = "ra", run_b: str = "rb") -> db.Engine:
    """Two runs (suites 'quick' and 'full') with results of two tasks; one result is old."""
    engine = db.connect(url)
    db.ensure_hardware(engine, fp, {"cpu_model": f"CPU {fp}", "logical_cpus": 2})
    db.store_peak(engine, fp, "cpu", "float32", 1,
                  {"flops_per_s": 1e9, "method": "matmul", "n_samples": 3})
    db.start_run(engine, run_a, "quick", "git:t", fp, 2)
    db.start_run(engine, run_b, "full", "git:t", fp, 2)
    db.store(engine, [
        _row("transformer", "prefill_latency", "latency_ms", 1.5, run_id=run_a,
             hardware_fingerprint=fp, arch_config={"d": 64, "n": [1, 2]}, samples=[1.0, 2.0],
             summary={"median": 1.5}, spread=0.2),
        _row("mamba", "prefill_latency", "latency_ms", -2.5, run_id=run_a,
             hardware_fingerprint=fp, extra={"note": "=x"}),
    ])
    db.store(engine, [
        _row("mamba", "energy", "energy_per_token_j", None, status="failed",
             error="boom", run_id=run_b, hardware_fingerprint=fp),
        _row("transformer", "energy", "energy_per_token_j", 0.25, run_id=run_b,
             hardware_fingerprint=fp, higher_is_better=None),
    ])
    r = db.Result.__table__
    with engine.begin() as conn:
        conn.execute(update(r).where(r.c.arch == "mamba", r.c.task == "energy")
                     .values(created_at=OLD))
    return engine


@pytest.fixture
def engine(db_url: str) -> db.Engine:
    return make_db(db_url)


def test_load_all_columns_and_types(engine) -> None:
    frame = results.load(engine)
    assert list(frame.columns) == results.RESULT_COLUMNS
    assert len(frame) == 4
    assert isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype)
    assert str(frame["created_at"].dt.tz) == "UTC"
    first = frame.iloc[0]
    assert first["arch_config"] == {"d": 64, "n": [1, 2]}
    assert first["samples"] == [1.0, 2.0] and first["summary"] == {"median": 1.5}


def test_load_by_url(engine, db_url: str) -> None:
    assert len(results.load(db_url)) == 4


def test_filters(engine) -> None:
    def arches(**f):
        return sorted(f"{r['arch']}/{r['task']}" for r in results.rows(engine, **f))

    assert arches(task="energy") == ["mamba/energy", "transformer/energy"]
    assert arches(suite="quick") == ["mamba/prefill_latency", "transformer/prefill_latency"]
    assert arches(suite=["quick", "full"]) == arches()
    assert arches(suite="nope") == []
    assert arches(arch="mamba", status="ok") == ["mamba/prefill_latency"]
    since = OLD + timedelta(days=1)
    assert arches(since=since) == ["mamba/prefill_latency", "transformer/energy",
                                   "transformer/prefill_latency"]
    assert arches(since="2025-01-02") == arches(since=since)
    assert arches(since="2025-01-02T00:00:00Z") == arches(since=since)
    assert arches(since="2025-01-01T11:00:00+00:00") == arches()
    assert arches(since="2025-01-01T13:00:00+02:00") == arches()  # 11:00 UTC
    assert arches(since=since.replace(tzinfo=None)) == arches(since=since)  # naive = UTC
    assert len(results.load(engine, suite="full", since=since)) == 1


def test_bad_filters() -> None:
    with pytest.raises(ValueError, match="not an ISO date"):
        results.parse_since("yesterday")
    with pytest.raises(TypeError, match="unknown result filter"):
        results.active({"suit": "x"})


def test_empty_database(tmp_path: Path) -> None:
    frame = results.load(f"sqlite:///{tmp_path / 'empty.db'}")
    assert frame.empty and list(frame.columns) == results.RESULT_COLUMNS
