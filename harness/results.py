"""Result rows for notebooks and exports: ``load(url, suite=..., task=..., since=...)``.

Rows are read with one SQLAlchemy Core query that selects only the rows the filters keep (the
suite filter joins ``runs`` on ``run_id``). JSON columns come back as Python objects and
timestamps as timezone-aware UTC datetimes on both backends (SQLite stores them without an
offset; they are UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Select, select
from sqlalchemy.engine import Engine

from harness import db

RESULT_COLUMNS = [c.name for c in db.Result.__table__.columns]
JSON_COLUMNS = [c.name for c in db.Result.__table__.columns if isinstance(c.type, JSON)]
DATETIME_COLUMNS = [c.name for c in db.Result.__table__.columns
                    if isinstance(c.type, DateTime)]
FILTERS = ("suite", "task", "arch", "since", "status")


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (how SQLite hands back what was stored as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_since(since: datetime | date | str) -> datetime:
    """``since`` as an aware UTC datetime: a datetime (naive = UTC), a date (its midnight UTC)
    or an ISO 8601 text (``2026-03-01`` or ``2026-03-01T12:00:00+02:00``)."""
    if isinstance(since, str):
        text = since.strip()
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat lacks the Z suffix
            text = text[:-1] + "+00:00"
        try:
            since = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"since: {since!r} is not an ISO date or date-time "
                             "(e.g. 2026-03-01 or 2026-03-01T12:00:00Z)") from None
    if isinstance(since, datetime):
        return _as_utc(since)
    if isinstance(since, date):
        return datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    raise TypeError(f"since must be a datetime, date or ISO text, not {type(since).__name__}")


def _values(name: str, value: str | Iterable[str]) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name}: give a name or a list of names, got {value!r}")
    return values


def query(*, suite: str | Iterable[str] | None = None, task: str | Iterable[str] | None = None,
          arch: str | Iterable[str] | None = None, since: datetime | date | str | None = None,
          status: str | Iterable[str] | None = None,
          columns: Sequence[Any] | None = None) -> Select:
    """The SELECT of the result rows these filters keep, oldest first (by id). Each name
    filter takes one name or a list of names; ``since`` keeps rows created at or after it.
    ``columns``: what to select (column expressions; every ``results`` column by default)."""
    r = db.Result.__table__
    stmt = select(*(r.columns if columns is None else columns))
    if suite is not None:
        runs = db.Run.__table__
        stmt = stmt.join(runs, runs.c.run_id == r.c.run_id) \
                   .where(runs.c.suite.in_(_values("suite", suite)))
    if task is not None:
        stmt = stmt.where(r.c.task.in_(_values("task", task)))
    if arch is not None:
        stmt = stmt.where(r.c.arch.in_(_values("arch", arch)))
    if status is not None:
        stmt = stmt.where(r.c.status.in_(_values("status", status)))
    if since is not None:
        stmt = stmt.where(r.c.created_at >= parse_since(since))
    return stmt.order_by(r.c.id)


def active(filters: dict[str, Any]) -> dict[str, Any]:
    """The filters that were given (not None); unknown names raise TypeError."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise TypeError(f"unknown result filter(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(FILTERS)}")
    return {k: v for k, v in filters.items() if v is not None}


def rows(engine: Engine, *, columns: Sequence[Any] | None = None, chunk_rows: int | None = None,
         **filters: Any) -> Any:
    """Every result row the filters keep (see :func:`query`) as a dict of all ``results``
    columns, oldest first; timestamps aware UTC, JSON columns Python objects.

    With ``chunk_rows``: an iterator over lists of up to that many rows, read from one
    streaming query (memory stays flat), each row a tuple of ``columns`` (column
    expressions, every ``results`` column by default) as SQLAlchemy returns them (timestamps
    not converted), for exports that format rows themselves."""
    stmt = query(columns=columns, **active(filters))
    if chunk_rows is not None:
        return _chunks(engine, stmt, chunk_rows)
    out = []
    with engine.connect() as conn:
        for row in conn.execute(stmt).mappings():
            d = dict(row)
            for name in DATETIME_COLUMNS:
                if d[name] is not None:
                    d[name] = _as_utc(d[name])
            out.append(d)
    return out


def _chunks(engine: Engine, stmt: Select, chunk_rows: int) -> Iterator[list[Any]]:
    with engine.connect() as conn:
        found = conn.execution_options(yield_per=chunk_rows).execute(stmt)
        for chunk in found.partitions():
            yield list(chunk)


def load(url_or_engine: str | Engine, **filters: Any) -> Any:
    """A pandas DataFrame of the result rows the filters keep (``suite``, ``task``, ``arch``,
    ``status``: a name or a list; ``since``: datetime, date or ISO text), one column per
    ``results`` column, JSON columns as Python objects, ``created_at`` as UTC datetimes.

    ``url_or_engine``: an Engine, a database URL, or a bare path to a SQLite file."""
    import pandas as pd

    engine = url_or_engine if isinstance(url_or_engine, Engine) else db.connect(url_or_engine)
    found = rows(engine, **filters)
    frame = pd.DataFrame.from_records(found, columns=RESULT_COLUMNS)
    for name in DATETIME_COLUMNS:
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame
