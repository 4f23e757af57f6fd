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

CSV, Parquet and JSON Lines stream the rows in chunks (``results.rows(chunk_rows=...)``) with
their JSON columns as the stored JSON text, passed through where it already is what encoding
the decoded value would write (samples, mostly) and decoded and re-encoded only where it could
differ (objects to sort for CSV and Parquet, escapes or NaN for JSON Lines): the files are the
same bytes as encoding every value would give.
"""

from __future__ import annotations

import csv
import gc
import json
import operator
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    cast,
    insert,
    select,
)
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
    columns = [*db.PROVENANCE_COLUMNS, "samples"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
        f = part.open("x", newline="")
    except OSError as e:
        raise OutputError(f"{out}: cannot be written ({e.strerror})") from None
    n = 0
    try:
        with f:
            writer = csv.writer(f)
            writer.writerow(columns)
            lines = _CsvLines(columns, writer)
            with _no_gc():
                for chunk in _stream(engine, columns, filters):
                    f.write("".join(lines.text(chunk)))
                    n += len(chunk)
        os.replace(part, out)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise OutputError(f"{out}: cannot be written ({e.strerror})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return n


class _CsvLines:
    """The lines ``csv.writer`` writes for rows of ``_cell`` values, built directly where that
    is plain: each value as its ``str`` (``None`` as empty, JSON columns as their (sorted)
    JSON text, quoted as the writer quotes them). A row with text to guard (a text column
    starting with one of ``FORMULA_STARTS``) or to quote (a comma, quote or line break outside
    its JSON columns) goes through ``_cell`` and the writer itself."""

    def __init__(self, columns: list[str], writer: Any) -> None:
        r = db.Result.__table__
        self.json_at = [i for i, c in enumerate(columns) if c in results.JSON_COLUMNS]
        self.time_at = [i for i, c in enumerate(columns) if c in results.DATETIME_COLUMNS]
        plain = [i for i in range(len(columns)) if i not in self.json_at]
        texts = [i for i in plain if isinstance(r.c[columns[i]].type, (String, Text))]
        self.plain = operator.itemgetter(*plain, *plain[:1])  # a tuple, however few
        self.commas = len(plain)
        self.texts = operator.itemgetter(*texts, *texts[:1]) if texts else None
        self.to_text = _JsonText(sort_keys=True)
        self.end = writer.dialect.lineterminator
        self.buffer: list[str] = []
        self.lines = csv.writer(_Sink(self.buffer), dialect=writer.dialect)

    @staticmethod
    def _quoted(text: str) -> str:
        if "," in text or '"' in text or "\n" in text or "\r" in text:
            return '"' + text.replace('"', '""') + '"'
        return text

    def _guard(self, fields: list[str]) -> bool:
        """Whether a text field starts with one of ``FORMULA_STARTS`` (or holds a CR)."""
        if self.texts is None:
            return False
        joined = "\n" + "\n".join(self.texts(fields))
        return ("\n=" in joined or "\n+" in joined or "\n-" in joined or "\n@" in joined
                or "\n\t" in joined or "\r" in joined)

    def text(self, chunk: list[Any]) -> list[str]:
        out = []
        for found in chunk:
            row = list(found)
            for i in self.time_at:
                if row[i] is not None:
                    row[i] = results._as_utc(row[i])
            for i in self.json_at:
                row[i] = self.to_text.csv_cell(row[i])
            fields = ["" if v is None else str(v) for v in row]
            plain = ",".join(self.plain(fields))
            if ('"' in plain or "\n" in plain or "\r" in plain
                    or plain.count(",") != self.commas or self._guard(fields)):
                self.lines.writerow([_cell(v) for v in row])
                out.append(self.buffer.pop())
                continue
            for i in self.json_at:
                fields[i] = self._quoted(fields[i])
            out.append(",".join(fields) + self.end)
        return out


class _Sink:
    """A file-like ``write`` that appends to a list (``csv.writer`` writes one row each)."""

    def __init__(self, into: list[str]) -> None:
        self.write = into.append


# --- reading rows for the file formats -------------------------------------------------------

CHUNK_ROWS = 2000  # rows fetched at a time: memory stays flat however many results there are


@contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused while rows are formatted: they are short-lived,
    acyclic tuples and strings, and its passes over the many live objects of a large export
    cost more than the formatting (reference counting still frees everything)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _stream(engine: Engine, columns: list[str], filters: dict[str, Any]) -> Iterator[list[Any]]:
    """The rows the filters keep, oldest first, ``CHUNK_ROWS`` at a time, as tuples of
    ``columns``: JSON columns as their stored JSON text (not decoded), the others typed as
    usual (``results.rows`` streaming)."""
    r = db.Result.__table__
    picked = [cast(r.c[name], Text).label(name) if isinstance(r.c[name].type, JSON)
              else r.c[name] for name in columns]
    return results.rows(engine, columns=picked, chunk_rows=CHUNK_ROWS, **filters)


def _encoder(**options: Any) -> Callable[[Any], str]:
    """``json.dumps(value, **options)`` with its encoder built once, not per call."""
    encoder = json.JSONEncoder(**options)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain encoder
        return encoder.encode
    strings = (json.encoder.encode_basestring_ascii if encoder.ensure_ascii
               else json.encoder.encode_basestring)
    fast = make(None, encoder.default, strings, None, encoder.key_separator,
                encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)

    def encode(value: Any) -> str:
        if isinstance(value, str):  # the C encoder takes containers; json.dumps takes both
            return encoder.encode(value)
        return "".join(fast(value, 0))

    return encode


class _JsonText:
    """Stored JSON text as the exports write it, decoding and re-encoding only where the text
    could differ from ``json.dumps`` of the decoded value (``sort_keys`` for CSV and Parquet;
    ``ensure_ascii=False, allow_nan=False`` for JSON Lines). Stored JSON is ``json.dumps``
    text (SQLAlchemy's serializer): a list without objects inside, with ``", "`` separators
    throughout, is its own sorted encoding, and so, for JSON Lines, is any text with no
    ``\\u`` escape and no NaN or Infinity. Repeated texts (configs, the volatile facts shared
    by a cell's rows) are converted once."""

    def __init__(self, sort_keys: bool) -> None:
        self.sort_keys = sort_keys
        self.seen: dict[str, Any] = {}
        self.dumps = (_encoder(sort_keys=True) if sort_keys
                      else _encoder(ensure_ascii=False, allow_nan=False))

    @staticmethod
    def _canonical(raw: str) -> bool:
        """Written with ``json.dumps``'s separators (a sanity check of the serializer: its
        first item and key separators, not a full parse)."""
        i = raw.find(",")
        if i >= 0 and raw[i + 1:i + 2] != " ":
            return False
        i = raw.find(":")
        return i < 0 or raw[i + 1:i + 2] == " "

    def _convert(self, raw: str) -> Any:
        """("text", json text) or ("value", a decoded scalar) for one stored JSON text."""
        hit = self.seen.get(raw)
        if hit is not None:
            return hit
        value = json.loads(raw)
        if isinstance(value, (dict, list)):
            got = ("text", self.dumps(value))
        else:
            got = ("value", value)
        if len(raw) < 2000:  # worth keeping: configs and facts that repeat
            if len(self.seen) > 20_000:
                self.seen.clear()
            self.seen[raw] = got
        return got

    def _fast(self, raw: str) -> bool:
        """Whether the stored text is already what re-encoding its value would write: for
        CSV and Parquet any list or object (stored with sorted keys since schema 3; rows
        written by older archbench keep their stored key order); for JSON Lines a list or
        object without escapes (``ensure_ascii``) and without NaN or Infinity (refused)."""
        if self.sort_keys:  # archbench stores JSON with sorted keys (db._json_dumps)
            return raw[:1] in ("[", "{") and self._canonical(raw)
        return (raw[:1] in ("[", "{") and "\\" not in raw and "N" not in raw
                and "I" not in raw and self._canonical(raw))

    def csv_cell(self, raw: str | None) -> Any:
        """What ``_cell`` makes of the decoded value."""
        if raw is None or raw == "null":
            return ""
        if self._fast(raw):
            return raw
        kind, got = self._convert(raw)
        return got if kind == "text" else _cell(got)

    def text(self, raw: str | None) -> str | None:
        """``_json_text`` of the decoded value (Parquet)."""
        if raw is None or raw == "null":
            return None
        if self._fast(raw):
            return raw
        kind, got = self._convert(raw)
        return got if kind == "text" else _json_text(got)

    def fragment(self, raw: str | None) -> Any:
        """("text", JSON to splice in) or ("value", the decoded value) for JSON Lines."""
        if raw is None or raw == "null":
            return ("value", None)
        if (raw[:1] in ("[", "{") and "\\" not in raw and "N" not in raw and "I" not in raw
                and self._canonical(raw)):  # _fast, inline: called for every value
            return ("text", raw)
        return self._convert(raw)


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

    schema = _parquet_schema()
    names = schema.names
    pieces: list[list[Any]] = [[] for _ in names]
    with _no_gc():
        _parquet_columns(engine, names, filters, schema, pieces)
    n = sum(len(p) for p in pieces[0])
    arrays = [pa.chunked_array(p, type=schema.field(i).type) for i, p in enumerate(pieces)]
    table = pa.Table.from_arrays(arrays, schema=schema).combine_chunks()
    pq.write_table(table, part)
    return n


def _parquet_columns(engine: Engine, names: list[str], filters: dict[str, Any], schema: Any,
                     pieces: list[list[Any]]) -> None:
    """Append each chunk's columns as Arrow arrays to ``pieces`` (one list per column)."""
    import pyarrow as pa

    json_at = [i for i, c in enumerate(names) if c in results.JSON_COLUMNS]
    time_at = [i for i, c in enumerate(names) if c in results.DATETIME_COLUMNS]
    to_text = _JsonText(sort_keys=True)
    for chunk in _stream(engine, names, filters):
        by_column = [list(col) for col in zip(*chunk, strict=True)]
        for i in json_at:
            by_column[i] = [to_text.text(v) for v in by_column[i]]
        for i in time_at:
            by_column[i] = [None if v is None else results._as_utc(v) for v in by_column[i]]
        for i, values in enumerate(by_column):
            pieces[i].append(pa.array(values, type=schema.field(i).type))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} is not JSON")


_MARK = "\x00"  # stands in for a JSON column while a row is encoded (strings hold no NUL)


def _write_jsonl(engine: Engine, part: Path, filters: dict[str, Any]) -> int:
    """One ``json.dumps`` object per row (``ensure_ascii=False, allow_nan=False``); stored JSON
    text is spliced in where it is already what encoding its value would give."""
    names = results.RESULT_COLUMNS
    json_at = [i for i, c in enumerate(names) if c in results.JSON_COLUMNS]
    time_at = [i for i, c in enumerate(names) if c in results.DATETIME_COLUMNS]
    nul = json.dumps(_MARK)[1:-1]  # how the encoder writes NUL
    mark = json.dumps(_MARK)  # a JSON column's place in the encoded row
    to_text = _JsonText(sort_keys=False)
    dumps = _encoder(default=_jsonable, ensure_ascii=False, allow_nan=False)
    n = 0
    with part.open("x", encoding="utf-8", newline="\n") as f, _no_gc():
        for chunk in _stream(engine, names, filters):
            lines = []
            for raw_row in chunk:
                row = list(raw_row)
                spliced = []
                for i in time_at:
                    if row[i] is not None:
                        row[i] = results._as_utc(row[i])
                for i in json_at:
                    kind, got = to_text.fragment(row[i])
                    if kind == "text":
                        row[i] = _MARK
                        spliced.append((i, got))
                    else:
                        row[i] = got
                line = dumps(dict(zip(names, row, strict=True)))
                if spliced and line.count(nul) == len(spliced):  # only the marks hold NUL
                    pieces = line.split(mark)
                    texts = [text for _, text in spliced]
                    line = "".join([p for pair in zip(pieces, texts, strict=False)
                                    for p in pair] + [pieces[-1]])
                elif spliced:  # a value held NUL: encode this row plainly
                    for i, text in spliced:
                        row[i] = json.loads(text)
                    line = json.dumps(dict(zip(names, row, strict=True)), default=_jsonable,
                                      ensure_ascii=False, allow_nan=False)
                lines.append(line)
            f.write("\n".join(lines))
            f.write("\n")
            n += len(chunk)
    return n


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
