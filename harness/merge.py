"""Combine databases from several machines: ``merge([src, ...], into=dst)``.

Hardware, runs, matmul peaks, nightlies, change points and the stored variant, task and metric
metadata are copied when the destination lacks them (by their keys), keeping their original
timestamps, so each result keeps its hardware and provenance. A result is copied unless the
destination already holds it:

* the same result: same ``(cell_id, hardware_fingerprint, run_id, metric, status,
  created_at)``, e.g. one merged before or copied to both machines; ``created_at`` is
  part of it so that two failed attempts of one cell in one run both survive;
* or, for a finished result (status in ``DONE_STATUSES``), any finished result of the same
  ``(cell_id, hardware_fingerprint, run_id, metric)``: the measurement exists once,
  which the destination's unique index ``ux_results_done`` demands too.

Source ids are not copied (the destination numbers its rows). Each source is merged in one
write transaction on the destination, so merging a database into itself, or merging twice,
adds nothing, and a failed merge adds nothing from that source.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from harness import db

EXACT_KEY = ("cell_id", "hardware_fingerprint", "run_id", "metric", "status", "created_at")
DONE_KEY = ("cell_id", "hardware_fingerprint", "run_id", "metric")
# tables copied by key when the destination lacks the row (change points are per machine and
# copied with their results' runs)
KEYED = {"hardware": ("fingerprint",), "runs": ("run_id",),
         "hardware_peaks": ("hardware_fingerprint", "device", "dtype", "threads"),
         "variants": ("name", "digest"), "tasks": ("name", "digest"),
         "metric_specs": ("task", "task_digest", "name"), "nightlies": ("nightly_id",)}


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    return value


def _exact(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_utc(row.get(k)) for k in EXACT_KEY)


def _done(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in DONE_KEY)


def _read(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    tables = {name: db.Base.metadata.tables[name] for name in (*KEYED, "results",
                                                                "change_points")}
    out = {}
    with engine.connect() as conn:
        for name, table in tables.items():
            stmt = select(table)
            if name == "results":
                stmt = stmt.order_by(table.c.id)
            out[name] = [dict(r) for r in conn.execute(stmt).mappings()]
    return out


def _add_missing(conn: Connection, table: Any, rows: list[dict[str, Any]],
                 key: tuple[str, ...]) -> int:
    """Insert the rows whose key the destination lacks; returns how many."""
    have = {tuple(r) for r in conn.execute(select(*(table.c[k] for k in key)))}
    new = []
    for row in rows:
        k = tuple(row[name] for name in key)
        if k not in have:
            have.add(k)
            new.append(row)
    if new:
        conn.execute(insert(table), new)
    return len(new)


def merge_engine(source: Engine, into: Engine) -> dict[str, int]:
    """Merge one source database into ``into``; returns the counts (see :func:`merge`)."""
    found = _read(source)
    counts = {"results_added": 0, "results_skipped": 0, "runs_added": 0, "hardware_added": 0}
    r = db.Result.__table__
    with db._writing(into) as conn:
        added = {name: _add_missing(conn, db.Base.metadata.tables[name], found[name], key)
                 for name, key in KEYED.items()}
        counts["hardware_added"], counts["runs_added"] = added["hardware"], added["runs"]
        points = db.ChangePoint.__table__
        for row in found["change_points"]:
            row.pop("id", None)
        _add_missing(conn, points, found["change_points"],
                     ("hardware_fingerprint", "setting_id", "metric", "run_id", "confirmed"))
        exact = {_exact(dict(row)) for row in
                 conn.execute(select(*(r.c[k] for k in EXACT_KEY))).mappings()}
        done = {tuple(row) for row in conn.execute(
            select(*(r.c[k] for k in DONE_KEY)).where(r.c.status.in_(db.DONE_STATUSES)))}
        new = []
        for row in found["results"]:
            row.pop("id", None)
            clean = db.sanitize_result(row)
            finished = clean.get("status") in db.DONE_STATUSES
            if _exact(clean) in exact or (finished and _done(clean) in done):
                counts["results_skipped"] += 1
                continue
            exact.add(_exact(clean))
            if finished:
                done.add(_done(clean))
            new.append(clean)
        if new:
            conn.execute(insert(r), new)
        counts["results_added"] = len(new)
    return counts


def merge(sources: list[str], into: str) -> dict[str, int]:
    """Merge every source database (URLs, or bare paths of SQLite files) into ``into`` (made
    with archbench's schema if new); returns ``{"results_added", "results_skipped",
    "runs_added", "hardware_added"}`` summed over the sources."""
    target = db.connect(into)
    total = {"results_added": 0, "results_skipped": 0, "runs_added": 0, "hardware_added": 0}
    try:
        for url in sources:
            source = db.connect(url)
            try:
                counts = merge_engine(source, target)
            finally:
                source.dispose()
            for k, v in counts.items():
                total[k] += v
    finally:
        target.dispose()
    return total
