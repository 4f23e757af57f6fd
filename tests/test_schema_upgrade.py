"""A database made by schema 1 (archbench aaff16a, `tests/fixtures/schema1.db`) is refused in
one line until `archbench db upgrade` migrates it in place with every row kept; a database
newer than the code gets one line and is left alone."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from harness import db
from harness.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "schema1.db"


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, cell_id, arch, task, metric, value, status, samples, "
                            "extra, created_at FROM results ORDER BY id").fetchall()


def test_schema1_database_upgrades_keeping_every_row(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    before = _rows(path)
    assert len(before) == 5
    # before the upgrade: one line naming the command, exit 2, nothing changed
    assert main(["--db", str(path), "export", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "archbench --db" in err and "db upgrade" in err
    assert _rows(path) == before
    assert main(["--db", str(path), "db", "upgrade"]) == 0
    assert f"upgraded from schema 1 to {db.SCHEMA_VERSION}" in capsys.readouterr().out
    engine = db.connect(f"sqlite:///{path}")
    assert _rows(path) == before  # nothing lost or changed
    with sqlite3.connect(path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
        columns = {c[1] for c in conn.execute("PRAGMA table_info(runs)")}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        settings = conn.execute("SELECT COUNT(*) FROM results WHERE setting_id IS NULL"
                                ).fetchone()[0]
    assert sorted(versions) == [1, db.SCHEMA_VERSION] and "heartbeat_at" in columns
    assert revision == db.HEAD and settings == 0  # every old row joined its series
    assert [r["status"] for r in db.runs(engine)] == ["finished"]
    # the upgraded database works: the finished cells count as done, a new run can be stored
    assert db.done_cells(engine, "fp_old_machine") == {
        "cell0", "cell1", "cell2", "cell3"}
    assert db.claim(engine, "cell4", "fp_old_machine", "new", 60)
    assert main(["--db", str(path), "db", "upgrade"]) == 0
    assert "already current" in capsys.readouterr().out


def test_database_newer_than_the_code_is_one_line_and_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "future.db"
    shutil.copy(FIXTURE, path)
    db.upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, "
                      "'2030-01-01')")
    before = _rows(path)
    with pytest.raises(db.SchemaError, match="newer than this archbench"):
        db.connect(f"sqlite:///{path}")
    assert main(["--db", str(path), "export", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema version 99" in err
    assert _rows(path) == before
