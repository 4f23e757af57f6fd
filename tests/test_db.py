"""Storage on SQLite and on a real PostgreSQL server (started by .ci/run on loopback).

Every storage test runs on both backends: ``database_url`` gives a fresh SQLite file, or a
fresh schema of the PostgreSQL test database (so tests never see each other's tables, and
several can run at once); without ``ARCHBENCH_TEST_PG_URL`` the PostgreSQL case is skipped,
unless CI demands it with ``ARCHBENCH_REQUIRE_PG``."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, inspect, make_url, select, text

from harness import db, ids
from tests.conftest import require

BACKENDS = ["sqlite", "postgresql"]


def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of ``kind``; the PostgreSQL schema is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    base = os.environ.get("ARCHBENCH_TEST_PG_URL")
    if not base:
        require("ARCHBENCH_REQUIRE_PG", "ARCHBENCH_TEST_PG_URL is not set (no PostgreSQL server)")
    schema = f"archbench_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '30s'"))
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


def _row(cell: str, status: str, value: float | None, **more) -> dict:
    return {
        "run_id": "run1", "cell_id": cell, "config_hash": "cfg", "code_version": "git:abc",
        "hardware_fingerprint": "fp", "arch": "mamba", "arch_version": 1,
        "arch_config": {"d_model": 64, "nested": {"a": [1, 2]}}, "task": "prefill_latency",
        "task_version": 1, "task_config": {"seq_len": 8}, "seed": 0, "metric": "latency_ms",
        "unit": "ms", "value": value, "n_samples": 3, "status": status, "error": None,
        "method": "perf_counter_ns", "device": "cpu", "dtype": "float32", "threads": 2,
        "samples": [1.0, 2.0, 3.0], "spread": 1.0, "spread_kind": "iqr", **more,
    }


def test_roundtrip(url: str) -> None:
    engine = db.connect(url)
    db.store(engine, [_row("c1", "ok", 2.0), _row("c2", "failed", None),
                      _row("c3", "unavailable", None)])
    assert db.done_cells(engine, "fp") == {"c1", "c3"}  # failed cells re-run
    assert db.done_cells(engine, "other-fp") == set()
    rows = db.results(engine)
    assert [r["cell_id"] for r in rows] == ["c1", "c2", "c3"]
    assert rows[0]["arch_config"]["nested"] == {"a": [1, 2]}
    assert rows[0]["samples"] == [1.0, 2.0, 3.0]
    assert rows[1]["value"] is None
    assert rows[0]["error"] is None  # nothing to sanitize: nothing noted
    db.connect(url)  # connecting again keeps data and the recorded migration
    assert db.count(engine) == 3
    with engine.connect() as conn:
        assert conn.scalars(select(db.Migration.version)).all() == [db.SCHEMA_VERSION]
    assert engine.dialect.name in ("sqlite", "postgresql")


def test_bare_path_and_env_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHBENCH_DB", str(tmp_path / "sub" / "env.db"))
    assert db.resolve_url() == f"sqlite:///{tmp_path / 'sub' / 'env.db'}"
    assert db.resolve_url("postgresql://u:secret@h/d") == "postgresql://u:secret@h/d"
    assert "secret" not in db.redact("postgresql://u:secret@h/d")


def test_other_backends_refused() -> None:
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        db.connect("mysql://u:p@localhost/x")


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    engine = db.connect(str(tmp_path / "wal.db"))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def _at_revision(url: str, revision: str) -> None:
    """An empty database brought to an older schema by the shipped migrations themselves."""
    from alembic import command

    engine = db._engine(url)
    with db._writing(engine) as conn:
        command.upgrade(db._alembic_config(conn), revision)
        conn.execute(text("INSERT INTO schema_migrations (version, applied_at) "
                          f"VALUES ({db.REVISIONS.index(revision) + 1}, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO runs (run_id, suite, code_version, hardware_fingerprint,"
                          " started_at, status, n_cells) VALUES ('old', 's', 'git:abc', 'fp', "
                          "CURRENT_TIMESTAMP, 'running', 1)"))
    engine.dispose()


def _schema(url: str) -> tuple[set[str], set[str], bool, list[int]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = inspect(conn)
        tables = set(found.get_table_names())
        columns = {c["name"] for c in found.get_columns("runs")}
        indexed = found.has_index("results", "ux_results_done")
        versions = conn.scalars(text("SELECT version FROM schema_migrations ORDER BY 1")).all()
    engine.dispose()
    return tables, columns, indexed, list(versions)


@pytest.mark.parametrize("revision", ["0001", "0002", "0003"])
def test_an_older_database_is_refused_until_upgraded(url: str, revision: str) -> None:
    _at_revision(url, revision)
    with pytest.raises(db.SchemaError, match="older than this archbench's .*db upgrade"):
        db.connect(url)
    assert db.upgrade(url) == (int(revision[-1]), db.SCHEMA_VERSION)
    engine = db.connect(url)
    tables, columns, indexed, versions = _schema(url)
    assert {"cell_claims", "variants", "tasks", "metric_specs", "nightlies",
            "change_points"} <= tables
    assert {"heartbeat_at", "kind", "config", "rerun", "nightly_id"} <= columns and indexed
    assert versions == [int(revision[-1]), db.SCHEMA_VERSION]
    assert [r["status"] for r in db.runs(engine)] == ["running"]  # old rows kept
    assert db.claim(engine, "c1", "fp", "new-run", 60)
    assert db.upgrade(url) == (db.SCHEMA_VERSION, db.SCHEMA_VERSION)  # idempotent


def test_migrations_build_the_schema_the_models_declare(url: str, tmp_path: Path) -> None:
    """alembic from nothing to head == create_all: tables, columns, nullability, keys,
    indexes (each backend against itself)."""
    _at_revision(url, "0001")
    db.upgrade(url)
    migrated = _describe(url)
    if url.startswith("sqlite"):
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
        db.connect(fresh)
        assert migrated == _describe(fresh)
    else:
        with db._writing(db._engine(url)) as conn:  # the model's DDL in a second schema
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS model_ddl"))
            conn.execute(text("SET LOCAL search_path TO model_ddl"))
            db.Base.metadata.create_all(conn)
            model = _describe_conn(conn)
            conn.execute(text("DROP SCHEMA model_ddl CASCADE"))
        assert migrated == model


def _describe(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        out = _describe_conn(conn)
    engine.dispose()
    return out


def _describe_conn(conn: Any) -> dict[str, Any]:
    found = inspect(conn)
    out: dict[str, Any] = {}
    for table in sorted(found.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": {c["name"]: (str(c["type"]).split("(")[0], c["nullable"])
                        for c in found.get_columns(table)},
            "pk": sorted(found.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in found.get_indexes(table)),
        }
    return out


def test_schema_1_duplicates_are_kept_and_the_index_skipped(url: str, caplog) -> None:
    _at_revision(url, "0001")
    old = create_engine(url)
    with old.begin() as conn:  # what two runners of schema 1 could leave behind
        for _ in range(2):
            conn.execute(insert(db.Result.__table__), _row("c1", "ok", 2.0))
    old.dispose()
    with caplog.at_level(logging.WARNING, logger="harness.db"):
        db.upgrade(url)
    engine = db.connect(url)
    assert "more than once" in caplog.text
    tables, columns, indexed, versions = _schema(url)
    assert "cell_claims" in tables and "heartbeat_at" in columns and not indexed
    assert versions == [1, db.SCHEMA_VERSION]
    assert db.count(engine) == 2  # no data deleted
    assert db.done_cells(engine, "fp") == {"c1"}
    assert not db.claim(engine, "c1", "fp", "new-run", 60)  # done all the same


def test_schema_4_fills_missing_setting_ids_and_builds_the_board_index(url: str) -> None:
    _at_revision(url, "0003")
    row = {"arch": "mamba", "arch_config": {"d_model": 8}, "task": "mqar",
           "task_config": {"seq_len": 12}, "device": "cpu", "dtype": "float32", "threads": 1}
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO results (run_id, cell_id, config_hash, code_version, "
            "hardware_fingerprint, arch, arch_version, arch_config, task, task_version, "
            "task_config, seed, metric, unit, value, n_samples, status, method, device, dtype, "
            "threads, created_at) VALUES ('old', 'c', 'h', 'git:abc', 'fp', 'mamba', 1, "
            "'{\"d_model\": 8}', 'mqar', 1, '{\"seq_len\": 12}', 0, 'accuracy', 'fraction', 0.5,"
            " 1, 'ok', 'm', 'cpu', 'float32', 1, CURRENT_TIMESTAMP)"))
    engine.dispose()
    assert db.upgrade(url) == (3, db.SCHEMA_VERSION)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalars(text("SELECT setting_id FROM results")).all() == [ids.setting_id(row)]
        assert inspect(conn).has_index("results", "ix_results_board")
    engine.dispose()
