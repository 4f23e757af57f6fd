"""Storage on SQLite and on a real PostgreSQL server (started by .ci/run on loopback)."""

from __future__ import annotations

import os

from harness import db
from tests.conftest import require


def _row(cell: str, status: str, value: float | None) -> dict:
    return {
        "run_id": "run1", "cell_id": cell, "config_hash": "cfg", "code_version": "git:abc",
        "hardware_fingerprint": "fp", "arch": "mamba", "arch_version": 1,
        "arch_config": {"d_model": 64, "nested": {"a": [1, 2]}}, "task": "prefill_latency",
        "task_version": 1, "task_config": {"seq_len": 8}, "seed": 0, "metric": "latency_ms",
        "unit": "ms", "value": value, "n_samples": 3, "status": status, "error": None,
        "method": "perf_counter_ns", "device": "cpu", "dtype": "float32", "threads": 2,
        "samples": [1.0, 2.0, 3.0], "spread": 1.0, "spread_kind": "iqr",
    }


def _roundtrip(url: str) -> None:
    engine = db.connect(url)
    db.store(engine, [_row("c1", "ok", 2.0), _row("c2", "failed", None),
                      _row("c3", "unavailable", None)])
    assert db.done_cells(engine, "fp", "git:abc") == {"c1", "c3"}  # failed cells re-run
    assert db.done_cells(engine, "fp", "git:other") == set()
    assert db.done_cells(engine, "other-fp", "git:abc") == set()
    rows = db.results(engine)
    assert [r["cell_id"] for r in rows] == ["c1", "c2", "c3"]
    assert rows[0]["arch_config"]["nested"] == {"a": [1, 2]}
    assert rows[0]["samples"] == [1.0, 2.0, 3.0]
    assert rows[1]["value"] is None
    db.connect(url)  # connecting again keeps data and the recorded migration
    assert db.count(engine) == 3


def test_sqlite_roundtrip(db_url: str) -> None:
    _roundtrip(db_url)


def test_bare_path_and_env_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHBENCH_DB", str(tmp_path / "sub" / "env.db"))
    assert db.resolve_url() == f"sqlite:///{tmp_path / 'sub' / 'env.db'}"
    assert db.resolve_url("postgresql://u:secret@h/d") == "postgresql://u:secret@h/d"
    assert "secret" not in db.redact("postgresql://u:secret@h/d")


def test_postgresql_roundtrip() -> None:
    url = os.environ.get("ARCHBENCH_TEST_PG_URL")
    if not url:
        require("ARCHBENCH_REQUIRE_PG", "ARCHBENCH_TEST_PG_URL is not set (no PostgreSQL server)")
    engine = db.connect(url)
    db.Base.metadata.drop_all(engine)  # a dedicated test database: start empty
    _roundtrip(url)
    assert engine.dialect.name == "postgresql"
