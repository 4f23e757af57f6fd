"""Exports. CSV: text a spreadsheet would run as a formula is neutralised, numbers are not, and
the output path is checked before anything is read or written. Parquet, JSON Lines, SQLite and
SQL dumps round-trip to the same rows as ``harness.results.load`` of the source, and filters
select the same rows in every format."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from harness import db, export, results
from harness.outputs import OutputError
from tests.test_results_load import make_db
from tests.test_site import _row

PREFIXES = ["=", "+", "-", "@", "\t", "\r"]


@pytest.fixture
def engine(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    rows = [_row(f"{p}cmd|' /C calc'!A0", "prefill_latency", "latency_ms", -0.5, spread=-0.25,
                 method=f"{p}HYPERLINK(\"http://x\")", error=f"{p}1+2", cell_id=f"c{i}")
            for i, p in enumerate(PREFIXES)]
    rows.append(_row("transformer", "prefill_latency", "latency_ms", 1.5, seed=-3,
                     arch_config={"=k": -1}, samples=[-1.0, 2.0], method="plain text"))
    db.store(engine, rows)
    return engine


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_formula_prefixes_are_quoted_in_text_cells(engine, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert export.to_csv(engine, out) == len(PREFIXES) + 1
    rows = _read(out)
    for p, row in zip(PREFIXES, rows, strict=False):
        assert row["arch"] == f"'{p}cmd|' /C calc'!A0"
        assert row["method"] == f"'{p}HYPERLINK(\"http://x\")"
        assert row["error"] == f"'{p}1+2"
    plain = rows[-1]
    assert plain["arch"] == "transformer" and plain["method"] == "plain text"
    assert plain["arch_config"] == '{"=k": -1}'  # JSON starts with '{': nothing to guard
    assert plain["samples"] == "[-1.0, 2.0]"


def test_negative_numbers_stay_numbers(engine, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    export.to_csv(engine, out)
    rows = _read(out)
    assert {r["value"] for r in rows[:-1]} == {"-0.5"}
    assert {r["spread"] for r in rows[:-1]} == {"-0.25"}
    assert rows[-1]["seed"] == "-3"
    assert "'-0.5" not in out.read_text()


def test_cell_rules() -> None:
    assert export._cell(-0.5) == -0.5 and export._cell(-3) == -3
    assert export._cell(None) == "" and export._cell(True) is True
    assert export._cell("-0.5") == "'-0.5"  # text that looks like a number is still text
    assert export._cell("a=b") == "a=b" and export._cell("") == ""
    assert export._cell({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}'


def test_refuses_a_folder_the_database_and_unwritable_paths(engine, db_url: str,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    def no_work(*_args, **_kw):
        raise AssertionError("read the database before checking --out")

    monkeypatch.setattr(export.db, "results", no_work)
    monkeypatch.setattr(export.results, "rows", no_work)
    database = tmp_path / "test.db"
    size = database.stat().st_size
    with pytest.raises(OutputError, match="is a folder"):
        export.to_csv(engine, tmp_path)
    with pytest.raises(OutputError, match="database being read") as err:
        export.to_csv(engine, database)
    assert "\n" not in str(err.value) and str(database) in str(err.value)
    assert database.stat().st_size == size
    other = tmp_path / "other.sqlite3"
    other.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(OutputError, match="SQLite database"):
        export.to_csv(engine, other)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        export.to_csv(engine, a_file / "r.csv")
    monkeypatch.setattr(export.os, "access", lambda *_a, **_k: False)  # root ignores modes
    with pytest.raises(OutputError, match="no permission"):
        export.to_csv(engine, tmp_path / "new.csv")


def test_a_failed_export_keeps_the_previous_file(engine, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.csv"
    out.write_text("previous export\n")

    def broken(value: object) -> object:
        raise RuntimeError("crashed mid-file")

    monkeypatch.setattr(export, "_cell", broken)
    with pytest.raises(RuntimeError, match="mid-file"):
        export.to_csv(engine, out)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no part file


# --- parquet, jsonl, sqlite, sql ---------------------------------------------------------------

KEY = ["run_id", "cell_id", "arch", "task", "metric", "status"]


@pytest.fixture
def source(tmp_path: Path) -> db.Engine:
    return make_db(f"sqlite:///{tmp_path / 'source.db'}")


def _key_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column, JSON columns as sorted JSON text, sorted by the key columns."""
    frame = frame.copy()
    for name in results.JSON_COLUMNS:
        frame[name] = [None if v is None else json.dumps(v, sort_keys=True)
                       for v in frame[name]]
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    frame = frame.astype({"higher_is_better": object})
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.sort_values(KEY).reset_index(drop=True)[results.RESULT_COLUMNS]


def _read_back(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        for name in results.JSON_COLUMNS:
            frame[name] = [None if pd.isna(v) else json.loads(v) for v in frame[name]]
        return frame
    if fmt == "jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        return pd.DataFrame([json.loads(line) for line in lines], columns=results.RESULT_COLUMNS)
    if fmt == "sqlite":
        return results.load(f"sqlite:///{path}")
    raise AssertionError(fmt)


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(_key_frame(got), _key_frame(want), check_dtype=False)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "sqlite"])
def test_round_trip_gives_the_same_rows(source, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    assert export.export(source, out, fmt) == 4
    _same(_read_back(out, fmt), results.load(source))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "sqlite", "csv"])
@pytest.mark.parametrize("filters", [{"task": "energy"}, {"suite": "quick"},
                                     {"since": "2025-06-01"},
                                     {"suite": "full", "since": "2025-06-01"}])
def test_filters_select_the_same_rows_in_every_format(source, tmp_path: Path, fmt: str,
                                                      filters: dict) -> None:
    want = results.load(source, **filters)
    assert 0 < len(want) < 4
    out = tmp_path / f"out.{fmt}"
    assert export.export(source, out, fmt, **filters) == len(want)
    if fmt == "csv":
        got = _read(out)
        assert sorted(r["cell_id"] + r["run_id"] for r in got) == \
            sorted(want["cell_id"] + want["run_id"])
        return
    _same(_read_back(out, fmt), want)


def test_filtered_sqlite_copy_holds_only_what_its_results_refer_to(tmp_path: Path) -> None:
    engine = make_db(f"sqlite:///{tmp_path / 'a.db'}", fp="fpA")
    make_db(f"sqlite:///{tmp_path / 'a.db'}", fp="fpB", run_a="rc", run_b="rd")
    out = tmp_path / "quick.sqlite"
    assert export.export(engine, out, "sqlite", suite="quick") == 4  # ra (fpA) and rc (fpB)
    copy = db.connect(f"sqlite:///{out}")
    assert sorted(r["run_id"] for r in db.runs(copy)) == ["ra", "rc"]
    assert set(db.hardware(copy)) == {"fpA", "fpB"}
    assert len(db.peaks(copy)) == 2
    out2 = tmp_path / "one.sqlite"
    assert export.export(engine, out2, "sqlite", suite="quick", arch="mamba",
                         since="2025-06-01") == 2
    copy = db.connect(f"sqlite:///{out2}")
    assert {r["hardware_fingerprint"] for r in db.results(copy)} == {"fpA", "fpB"}
    only_a = tmp_path / "fpa.sqlite"
    export.export(engine, only_a, "sqlite", suite="full", task="prefill_latency")  # none
    copy = db.connect(f"sqlite:///{only_a}")
    assert db.count(copy) == 0 and db.runs(copy) == [] and db.hardware(copy) == {}


def test_unfiltered_sqlite_copy_is_a_whole_single_file(source, tmp_path: Path) -> None:
    out = tmp_path / "copy.sqlite"
    export.export(source, out, "sqlite")
    con = sqlite3.connect(out)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    assert {"results", "runs", "hardware", "hardware_peaks", "schema_migrations"} <= tables
    copy = db.connect(f"sqlite:///{out}")
    assert db.runs(copy) == db.runs(source) and db.hardware(copy) == db.hardware(source)
    assert db.peaks(copy) == db.peaks(source)


@pytest.mark.parametrize("filters", [{}, {"task": "energy"}])
def test_sql_dump_loads_into_an_empty_database(source, tmp_path: Path, filters: dict) -> None:
    out = tmp_path / "dump.sql"
    n = export.export(source, out, "sql", **filters)
    assert n == len(results.load(source, **filters))
    assert out.read_text().startswith("BEGIN TRANSACTION;")
    target = tmp_path / "loaded.db"
    con = sqlite3.connect(target)
    try:
        con.executescript(out.read_text())
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == n
    finally:
        con.close()
    _same(results.load(f"sqlite:///{target}"), results.load(source, **filters))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_in_memory_source_is_copied_too(tmp_path: Path) -> None:
    engine = make_db("sqlite://")
    out = tmp_path / "mem.sqlite"
    assert export.export(engine, out, "sqlite") == 4
    _same(results.load(f"sqlite:///{out}"), results.load(engine))


def test_unknown_format_and_bad_paths_fail_before_reading(source, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    def no_work(*_args, **_kw):
        raise AssertionError("read the database before checking")

    monkeypatch.setattr(export.results, "rows", no_work)
    with pytest.raises(export.FormatError, match="allowed: csv, parquet, jsonl, sqlite, sql") \
            as err:
        export.export(source, tmp_path / "x.xlsx", "xlsx")
    assert isinstance(err.value, OutputError) and "\n" not in str(err.value)
    for fmt in export.FORMATS:
        with pytest.raises(OutputError, match="is a folder"):
            export.export(source, tmp_path, fmt)
        with pytest.raises(OutputError, match="database being read"):
            export.export(source, tmp_path / "source.db", fmt)
    with pytest.raises(ValueError, match="not an ISO date"):
        export.export(source, tmp_path / "x.jsonl", "jsonl", since="last week")
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "sqlite", "sql"])
def test_a_failed_export_leaves_the_previous_file(source, tmp_path: Path, fmt: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.out"
    out.write_text("previous export\n")
    real = export.results.rows

    def crash(*args, **kw):
        real(*args, **kw)
        raise RuntimeError("crashed mid-export")

    monkeypatch.setattr(export.results, "rows", crash)
    monkeypatch.setattr(export, "database_path", lambda _e: None)  # no backup shortcut
    with pytest.raises(RuntimeError, match="mid-export"):
        export.export(source, out, fmt)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
