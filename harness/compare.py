"""``archbench compare A B``: two runs, code versions or databases, series by series.

Each side is resolved, in this order, to a set of finished results:

- a database (a URL, or the path of an existing SQLite file): its newest result per series;
- a run id in the ``--db`` database: that run's results;
- a code version (``git:<sha>[-dirty]`` or ``archbench-<version>``) in the ``--db`` database:
  the newest result per series measured by that version.

A series is (machine, setting, metric); when the two sides share no machine (two databases
from two machines), series are matched by (setting, metric) alone and each row names both
machines. Where both sides have raw samples the change is tested as the nightly does
(:func:`harness.regress.compare`, the B side against A as its only history run); otherwise
only the ratio is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from harness import db, regress

COLUMNS = ("id", "run_id", "code_version", "hardware_fingerprint", "setting_id", "arch", "task",
           "metric", "unit", "value", "higher_is_better", "samples", "task_config")


class CompareError(ValueError):
    """A side that names no run, code version or database; the message is one line."""


def _is_database(spec: str) -> bool:
    return "://" in spec or Path(spec).is_file()


def _newest(conn: Any, *where: Any) -> list[dict[str, Any]]:
    r = db.Result.__table__.c
    finished = [r.status.in_(db.DONE_STATUSES), r.setting_id.is_not(None), *where]
    newest = (select(func.max(r.id)).where(*finished)
              .group_by(r.hardware_fingerprint, r.setting_id, r.metric))
    stmt = select(*(r[c] for c in COLUMNS)).where(r.id.in_(newest)).order_by(r.id)
    return [dict(row) for row in conn.execute(stmt).mappings()]


def side(engine: Engine, spec: str, label: str) -> tuple[str, list[dict[str, Any]]]:
    """(what the side is, its rows)."""
    if _is_database(spec):
        other = db.connect(spec)
        try:
            with other.connect() as conn:
                return f"database {db.redact(str(other.url))}", _newest(conn)
        finally:
            other.dispose()
    r = db.Result.__table__.c
    with engine.connect() as conn:
        if conn.scalar(select(func.count()).where(db.Run.__table__.c.run_id == spec)):
            rows = _newest(conn, r.run_id == spec)
            return f"run {spec}", rows
        rows = _newest(conn, r.code_version == spec)
        if rows:
            return f"code {spec}", rows
        versions = sorted(conn.scalars(select(r.code_version).distinct()))[:5]
    raise CompareError(f"{label}: {spec!r} is not a database, nor a run id or code version in "
                       f"{db.redact(str(engine.url))}; code versions there include: "
                       f"{', '.join(versions) or 'none'}")


def compare(url: str, a: str, b: str, *, tasks: list[str] | None = None,
            metrics: list[str] | None = None) -> dict[str, Any]:
    engine = db.connect(url)
    what_a, rows_a = side(engine, a, "A")
    what_b, rows_b = side(engine, b, "B")

    def keep(row: dict[str, Any]) -> bool:
        return (not tasks or row["task"] in tasks) and (not metrics or row["metric"] in metrics)

    rows_a, rows_b = [r for r in rows_a if keep(r)], [r for r in rows_b if keep(r)]
    same_machine = bool({r["hardware_fingerprint"] for r in rows_a}
                        & {r["hardware_fingerprint"] for r in rows_b})

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        base = (row["setting_id"], row["metric"])
        return (row["hardware_fingerprint"], *base) if same_machine else base

    by_a = {key(r): r for r in rows_a}
    by_b = {key(r): r for r in rows_b}
    out = []
    for k in sorted(set(by_a) | set(by_b), key=lambda k: _sort(by_a.get(k) or by_b[k])):
        out.append(_pair(by_a.get(k), by_b.get(k)))
    return {"a": what_a, "b": what_b, "same_machine": same_machine, "rows": out}


def _sort(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["task"], row["metric"], row["arch"])


def _pair(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    ref = a or b
    assert ref is not None
    out: dict[str, Any] = {
        "arch": ref["arch"], "task": ref["task"], "metric": ref["metric"], "unit": ref["unit"],
        "setting_id": ref["setting_id"], "machine_a": a and a["hardware_fingerprint"],
        "machine_b": b and b["hardware_fingerprint"], "a": a and a["value"],
        "b": b and b["value"], "ratio": None, "change": "only in A" if b is None else
        "only in B" if a is None else "n/a", "p_value": None, "rel_change": None}
    if a is None or b is None or a["value"] is None or b["value"] is None:
        return out
    if a["value"]:
        out["ratio"] = b["value"] / a["value"]
        out["rel_change"] = out["ratio"] - 1
    if a.get("samples") and b.get("samples"):
        verdict = regress.compare(b["samples"], [a["samples"]], ref["higher_is_better"])
        out.update(change=verdict.change, p_value=verdict.p_value,
                   rel_change=verdict.rel_change)
    else:
        out["change"] = "no samples" if a["value"] != b["value"] else "same"
    return out


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def render(table: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    head = ("variant", "task", "metric", "A", "B", "B/A", "change", "p")
    lines = [[r["arch"], r["task"], r["metric"], _fmt(r["a"]), _fmt(r["b"]),
              _fmt(r["ratio"]), r["change"], _fmt(r["p_value"])] for r in table["rows"]]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(head)]
    text = [f"A: {table['a']}", f"B: {table['b']}"]
    if not table["same_machine"]:
        text.append("note: the two sides share no machine; series matched by setting only")
    text.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    text += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    if not lines:
        text.append("(no finished results in common or apart)")
    return "\n".join(text)
