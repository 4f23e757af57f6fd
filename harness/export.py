"""Exports: long-format CSV, one row per result with its provenance columns.

Text cells that a spreadsheet would run as a formula are neutralised (OWASP, CSV Injection);
the file is written beside ``out`` and renamed over it, so a failed export leaves no half file.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from pathlib import Path

from sqlalchemy.engine import Engine

from harness import db
from harness.outputs import OutputError, check_file_out, database_path

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


def to_csv(engine: Engine, out: Path) -> int:
    """Write every result (raw samples as a JSON column) to ``out``; returns the row count.

    Raises OutputError, before reading anything, when ``out`` is a folder, the database being
    read (or any SQLite file), or cannot be written."""
    out = Path(out)
    check_file_out(out, database_path(engine))
    rows = db.results(engine)
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
