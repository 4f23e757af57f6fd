"""Exports of result rows: CSV, Parquet, JSON Lines, a SQLite copy or a SQL text dump.

``export(engine, out, fmt, suite=..., task=..., arch=..., since=..., status=...)`` writes the
result rows the filters keep (see :mod:`harness.results`). CSV is long format, one row per
result with its provenance columns; text cells that a spreadsheet would run as a formula are
neutralised (OWASP, CSV Injection). Parquet has a fixed schema (JSON columns as JSON text,
timestamps UTC); JSON Lines has one object per result (timestamps ISO 8601). ``sqlite`` is a
database with archbench's schema holding the results and the runs, hardware and matmul peaks
they refer to (an unfiltered SQLite source is copied whole with SQLite's backup API); ``sql``
is that database as SQL text (``sqlite3`` ``iterdump``). Every file is written beside ``out``
and renamed over it, so a failed export leaves no half file, and ``out`` is checked
(:func:`harness.outputs.check_file_out`) before anything is read.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, insert, select
from sqlalchemy.engine import Engine

from harness import db, results
from harness.outputs import OutputError, check_file_out, database_path

FORMATS = ("csv", "parquet", "jsonl", "sqlite", "sql")

# OWASP "CSV Injection": a cell starting with one of these is read as a formula by
# spreadsheets; a leading single quote makes them show it as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """One CSV cell: containers as sorted JSON, None as empty, text guarded against formula
    injection. Numbers stay numbers, so -0.5 is written as -0.5."""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(engine: Engine, out: Path, **filters: Any) -> int:
    """Write every result the filters keep (raw samples as a JSON column) to ``out``; returns
    the row count.

    Raises OutputError, before reading anything, when ``out`` is a folder, the database being
    read (or any SQLite file), or cannot be written."""
    out = Path(out)
    check_file_out(out, database_path(engine))
    filters = results.active(filters)
    rows = results.rows(engine, **filters)
    columns = [*db.PROVENANCE_COLUMNS, "samples"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
        f = part.open("x", newline="")
    except OSError as e:
        raise OutputError(f"{out}: cannot be written ({e.strerror})") from None
    try:
        with f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row[c]) for c in columns])
        os.replace(part, out)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot be written ({e.strerror})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return len(rows)


# --- every format ----------------------------------------------------------------------------


class FormatError(OutputError):
    """An export format archbench does not write; the message is one line naming the allowed."""


def export(engine: Engine, out: Path, fmt: str, **filters: Any) -> int:
    """Write the results the filters keep (``suite``, ``task``, ``arch``, ``status``: a name or
    a list; ``since``: datetime, date or ISO text) to ``out`` as ``fmt`` (one of
    ``FORMATS``); returns the number of result rows written.

    Raises FormatError for an unknown format and OutputError for an ``out`` that may not be
    written, both before reading anything."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out = Path(out)
    check_file_out(out, database_path(engine))
    filters = results.active(filters)
    if filters.get("since") is not None:
        results.parse_since(filters["since"])  # a bad date fails before any file is made
    if fmt == "csv":
        return to_csv(engine, out, **filters)
    writer = {"parquet": _write_parquet, "jsonl": _write_jsonl, "sqlite": _write_sqlite,
              "sql": _write_sql}[fmt]
    return _atomic(out, lambda part: writer(engine, part, filters))


def _part(out: Path) -> Path:
    return out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")


def _remove(path: Path) -> None:
    """A temporary file and the journal files SQLite may have left beside it."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        p.unlink(missing_ok=True)


def _atomic(out: Path, write: Callable[[Path], int]) -> int:
    """Run ``write(part)`` on a fresh file name beside ``out``, then rename it over ``out``;
    on any failure the part file goes and ``out`` is left as it was."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out}: cannot be written ({e.strerror})") from None
    part = _part(out)
    try:
        n = write(part)
        os.replace(part, out)
    except OSError as e:
        _remove(part)
        raise OutputError(f"{out}: cannot be written ({e.strerror or e})") from None
    except BaseException:
        _remove(part)
        raise
    return n


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _parquet_schema() -> Any:
    """One fixed Arrow schema for every export, whatever the rows (even none) hold."""
    import pyarrow as pa

    fields = []
    for c in db.Result.__table__.columns:
        if isinstance(c.type, Integer):
            kind = pa.int64()
        elif isinstance(c.type, Float):
            kind = pa.float64()
        elif isinstance(c.type, Boolean):
            kind = pa.bool_()
        elif isinstance(c.type, DateTime):
            kind = pa.timestamp("us", tz="UTC")
        else:  # String, Text and JSON (as JSON text)
            kind = pa.string()
        fields.append(pa.field(c.name, kind))  # nullable: old rows may lack a value
    return pa.schema(fields)


def _write_parquet(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = results.rows(engine, **filters)
    for row in rows:
        for name in results.JSON_COLUMNS:
            row[name] = _json_text(row[name])
    table = pa.Table.from_pylist(rows, schema=_parquet_schema())
    pq.write_table(table, part)
    return len(rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _write_jsonl(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    rows = results.rows(engine, **filters)
    with part.open("x", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, default=_jsonable, ensure_ascii=False, allow_nan=False))
            f.write("\n")
    return len(rows)


def _write_sqlite(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    source = database_path(engine)
    if source is not None and not filters:
        return _backup(engine, source, part)
    return _copy(engine, part, filters)


def _backup(engine: Engine, source: Path, part: Path) -> int:
    """A consistent copy of a whole SQLite file (the backup API reads one snapshot), as a
    single self-contained file (rollback journal, not WAL)."""
    src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(part)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            n = dst.execute("SELECT count(*) FROM results").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    return n


def _copy(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    """A new SQLite database with archbench's schema holding the results the filters keep and
    the runs, hardware and peaks they refer to (with filters) or all of them (without)."""
    rows = results.rows(engine, **filters)
    runs_t, hw_t, peaks_t = (db.Run.__table__, db.HardwareRow.__table__, db.Peak.__table__)
    run_ids = {r["run_id"] for r in rows}
    with engine.connect() as conn:
        runs = [dict(r) for r in conn.execute(select(runs_t).order_by(runs_t.c.run_id))
                .mappings() if not filters or r["run_id"] in run_ids]
        fingerprints = ({r["hardware_fingerprint"] for r in rows}
                        | {r["hardware_fingerprint"] for r in runs})
        hardware = [dict(r) for r in conn.execute(select(hw_t)).mappings()
                    if not filters or r["fingerprint"] in fingerprints]
        peaks = [dict(r) for r in conn.execute(select(peaks_t)).mappings()
                 if not filters or r["hardware_fingerprint"] in fingerprints]
    target = db.connect(f"sqlite:///{part}")
    try:
        with db._writing(target) as conn:
            for table, found in ((hw_t, hardware), (runs_t, runs), (peaks_t, peaks),
                                 (db.Result.__table__, rows)):
                if found:
                    conn.execute(insert(table), found)
    finally:
        target.dispose()
    con = sqlite3.connect(part)  # one self-contained file: out of WAL mode
    try:
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()
    return len(rows)


def _write_sql(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    copy = part.with_name(part.name + ".sqlite")
    try:
        n = _write_sqlite(engine, copy, filters)
        con = sqlite3.connect(copy)
        try:
            with part.open("x", encoding="utf-8", newline="\n") as f:
                for line in con.iterdump():
                    f.write(line)
                    f.write("\n")
        finally:
            con.close()
    finally:
        _remove(copy)
    return n
