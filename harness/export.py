"""Exports: long-format CSV, one row per result with its provenance columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from sqlalchemy.engine import Engine

from harness import db


def _cell(value: object) -> object:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def to_csv(engine: Engine, out: Path) -> int:
    """Write every result (raw samples as a JSON column) to ``out``; returns the row count."""
    rows = db.results(engine)
    columns = [*db.PROVENANCE_COLUMNS, "samples"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in columns])
    return len(rows)
