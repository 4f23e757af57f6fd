"""Efficient reads of the ``results`` table for the site, the exports and ``derive``.

Each function selects only the columns its reader needs (SQLAlchemy Core, never ORM objects),
computes "the newest row per key" in SQL (``max(id)`` grouped by the key, a subquery both
SQLite and PostgreSQL run) and leaves the raw timing ``samples`` out unless asked for. Columns
are named explicitly through ``db.Result.__table__.c`` or taken from the table at run time, so
columns added to ``results`` later are carried where "every column" is meant.

JSON columns in a grouping key are compared as their text (``CAST(... AS TEXT)``: PostgreSQL's
``json`` type has no equality); two equal values written with their keys in another order are
then two keys, which is why callers that key rows on decoded JSON still fold the (few) rows
these queries return in ``id`` order, exactly as they fold every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Select, Text, and_, cast, func, or_, select
from sqlalchemy.engine import Engine

from harness import db

R = db.Result.__table__
LATEST_KEY = ("hardware_fingerprint", "arch", "task", "metric")  # the site's "newest" key
HEAVY_COLUMNS = ("samples", "summary", "volatile")  # large JSON the pages never show


def is_json(name: str) -> bool:
    return isinstance(R.c[name].type, JSON)


def columns_except(skip: Iterable[str] = HEAVY_COLUMNS) -> list[str]:
    """Every ``results`` column (as the table has them at run time) but ``skip``."""
    skip = set(skip)
    return [c.name for c in R.columns if c.name not in skip]


def _key(name: str) -> Any:
    column = R.c[name]
    return cast(column, Text) if isinstance(column.type, JSON) else column


def newest_ids(key: Sequence[str], *where: Any) -> Select:
    """``SELECT max(id) ... WHERE where GROUP BY key``: the newest row of each key."""
    return select(func.max(R.c.id)).where(*where).group_by(*(_key(k) for k in key))


def pairs_clause(pairs: Iterable[tuple[str, str]] | None) -> list[Any]:
    """A WHERE term keeping rows of these (hardware fingerprint, task) pairs; none for None."""
    if pairs is None:
        return []
    pairs = sorted(set(pairs))
    if not pairs:
        return [R.c.id.is_(None)]  # nothing (ids are never NULL)
    by_fp: dict[str, list[str]] = {}
    for fp, task in pairs:
        by_fp.setdefault(fp, []).append(task)
    return [or_(*(and_(R.c.hardware_fingerprint == fp, R.c.task.in_(tasks))
                  for fp, tasks in sorted(by_fp.items())))]


def fetch(engine: Engine, stmt: Select) -> list[dict[str, Any]]:
    """The rows as dicts (zipped with the column names: a third faster than ``mappings()``)."""
    with engine.connect() as conn:
        result = conn.execute(stmt)
        keys = list(result.keys())
        return [dict(zip(keys, row, strict=True)) for row in result]


def newest_rows(engine: Engine, key: Sequence[str], columns: Sequence[str], *where: Any
                ) -> list[dict[str, Any]]:
    """The newest row (highest id) of each ``key`` among the rows ``where`` keeps, with only
    ``columns`` (JSON decoded), oldest first."""
    ids = newest_ids(key, *where).scalar_subquery()
    stmt = select(*(R.c[c] for c in columns)).where(R.c.id.in_(ids)).order_by(R.c.id)
    return fetch(engine, stmt)


def count_results(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(R)) or 0


def latest_rows(engine: Engine, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Newest row per (hardware, architecture, task, metric), oldest first (a fold of every
    row in id order keeping the last of each key)."""
    return newest_rows(engine, LATEST_KEY, columns or columns_except())


def first_units(engine: Engine) -> dict[tuple[str, str], str]:
    """(task, metric) -> unit of the oldest row of that task and metric (any status)."""
    ids = select(func.min(R.c.id)).group_by(R.c.task, R.c.metric).scalar_subquery()
    stmt = select(R.c.task, R.c.metric, R.c.unit).where(R.c.id.in_(ids))
    with engine.connect() as conn:
        return {(t, m): u for t, m, u in conn.execute(stmt)}


# --- sweeps, seed means, achieved FLOP/s (harness.derive) -------------------------------------

SWEEP_KEY = ("hardware_fingerprint", "task", "metric", "arch", "task_config", "device", "dtype",
             "threads")
SWEEP_COLUMNS = ("id", "hardware_fingerprint", "task", "metric", "arch", "task_config",
                 "device", "dtype", "threads", "status", "value")


def sweep_rows(engine: Engine, wanted: Sequence[tuple[str, str]],
               columns: Sequence[str] = SWEEP_COLUMNS,
               pairs: Iterable[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Candidate points of sequence-length sweeps: the newest ``ok`` row of each (task,
    metric) in ``wanted`` per (hardware, task, metric, architecture, task config, device,
    dtype, threads), oldest first; only of the (fingerprint, task) ``pairs`` when given.
    ``derive.sweep_series`` of these equals ``sweep_series`` of every row."""
    if not wanted:
        return []
    where = [R.c.status == "ok", or_(*(and_(R.c.task == t, R.c.metric == m) for t, m in wanted)),
             *pairs_clause(pairs)]
    return newest_rows(engine, SWEEP_KEY, columns, *where)


SEED_KEY = ("hardware_fingerprint", "arch", "task", "metric", "config_hash", "unit", "seed")
SEED_COLUMNS = ("id", *SEED_KEY, "status", "value", "extra")


def seed_rows(engine: Engine, pairs: Iterable[tuple[str, str]] | None = None
              ) -> list[dict[str, Any]]:
    """The newest ``ok`` row with a value per (setting, seed), as ``derive.seed_means`` reads
    them, oldest first; only of the (fingerprint, task) ``pairs`` when given."""
    where = [R.c.status == "ok", R.c.value.is_not(None), *pairs_clause(pairs)]
    return newest_rows(engine, SEED_KEY, SEED_COLUMNS, *where)


ACHIEVED_KEY = ("hardware_fingerprint", "task", "metric", "arch", "arch_config", "task_config",
                "device", "dtype", "threads")
ACHIEVED_COLUMNS = ("id", *ACHIEVED_KEY, "status", "value")


def shape_rows(engine: Engine, wanted: Sequence[tuple[str, str]],
               fingerprints: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Newest ``ok`` row of each (task, metric) in ``wanted`` per architecture, its config and
    shape (what ``derive.achieved`` pairs up), oldest first; of ``fingerprints`` if given."""
    if not wanted:
        return []
    where = [R.c.status == "ok",
             or_(*(and_(R.c.task == t, R.c.metric == m) for t, m in wanted))]
    if fingerprints is not None:
        where.append(R.c.hardware_fingerprint.in_(sorted(set(fingerprints))))
    return newest_rows(engine, ACHIEVED_KEY, ACHIEVED_COLUMNS, *where)


def touched_pairs(engine: Engine, run_id: str) -> set[tuple[str, str]]:
    """(hardware fingerprint, task) of every row the run stored."""
    stmt = select(R.c.hardware_fingerprint, R.c.task).where(R.c.run_id == run_id).distinct()
    with engine.connect() as conn:
        return {(fp, task) for fp, task in conn.execute(stmt)}


def fingerprints(engine: Engine) -> set[str]:
    """Every hardware fingerprint that has results."""
    with engine.connect() as conn:
        return set(conn.scalars(select(R.c.hardware_fingerprint).distinct()))


# --- boards (harness.boards) -----------------------------------------------------------------

# the setting id hashes (arch, arch_config, task, task_config, device, dtype, threads); every
# row has one (db.store fills it in, migrations filled in older rows); ix_results_board covers
BOARD_KEY = ("hardware_fingerprint", "setting_id", "metric", "seed")


def board_rows(engine: Engine, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per (machine, setting, metric, seed, run suite and config) the newest finished row and
    the newest row of any status (often the same one), oldest first, without samples: what
    ``boards.group`` picks the newest version's seeds from. A seed whose newest row is of an
    older version than the newest row of its setting is then left out, as it should be; only
    where versions were run out of order (an older version re-run after a newer one) does a
    seed of the newest version hide behind a newer row of another."""
    done = R.c.status.in_(db.DONE_STATUSES)
    runs = db.Run.__table__
    # the run's suite and its plan (whose model section is the board's budget): rows of one
    # setting and seed stored by suites of different budgets are kept apart, and the rows of
    # each suite are there for claims, which prefer their own suite's rows
    ids = (select(func.max(R.c.id))
           .select_from(R.outerjoin(runs, runs.c.run_id == R.c.run_id))
           .group_by(*(R.c[k] for k in BOARD_KEY), done, runs.c.suite,
                     cast(runs.c.config, Text)))
    stmt = (select(*(R.c[c] for c in columns or columns_except()))
            .where(R.c.id.in_(ids.scalar_subquery())).order_by(R.c.id))
    return fetch(engine, stmt)


def run_facts(engine: Engine) -> dict[str, dict[str, Any]]:
    """run id -> suite, config (the suite as planned, since schema 3), started_at, status."""
    runs = db.Run.__table__
    stmt = select(runs.c.run_id, runs.c.suite, runs.c.config, runs.c.started_at, runs.c.status)
    return {r["run_id"]: r for r in fetch(engine, stmt)}


def newest_volatile(engine: Engine, fingerprints: Iterable[str], batch: int = 64
                    ) -> dict[str, dict[str, Any]]:
    """Hardware fingerprint -> the volatile facts (load, clocks, energy meter...) of its newest
    row that recorded any, with that row's id and run: per machine its rows newest first, a
    batch at a time (most rows record them, so one batch is usually all it reads)."""
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for fp in sorted(fingerprints):
            before = None
            while fp not in out:
                stmt = (select(R.c.id, R.c.hardware_fingerprint, R.c.run_id, R.c.volatile)
                        .where(R.c.hardware_fingerprint == fp,
                               *([R.c.id < before] if before is not None else []))
                        .order_by(R.c.id.desc()).limit(batch))
                found = conn.execute(stmt).mappings().all()
                if not found:
                    break
                recorded = next((r for r in found  # newest first
                                 if isinstance(r["volatile"], dict) and r["volatile"]), None)
                if recorded is not None:
                    out[fp] = dict(recorded)
                before = found[-1]["id"]
    return out


def claim_rows(engine: Engine, wanted: Sequence[tuple[str, Sequence[str], Sequence[str]]],
               columns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows (``columns`` and their run's suite) of each (task, variants, metrics) in
    ``wanted``, oldest first, in one query: what ``claims`` reads claim by claim."""
    if not wanted:
        return []
    runs = db.Run.__table__
    stmt = (select(*(R.c[c] for c in columns), runs.c.suite)
            .select_from(R.outerjoin(runs, runs.c.run_id == R.c.run_id))
            .where(or_(*(and_(R.c.task == t, R.c.arch.in_(list(a)), R.c.metric.in_(list(m)))
                         for t, a, m in wanted)))
            .order_by(R.c.id))
    return fetch(engine, stmt)


# --- history (harness.history) ---------------------------------------------------------------

HISTORY_KEY = ("hardware_fingerprint", "setting_id", "metric", "run_id")


def history_points(engine: Engine, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per (machine, setting, metric, run) of these metrics: the finished rows' mean, range,
    widest CI and count, with the run's start and code version, in one grouped query over the
    covering ``ix_results_board`` (never the samples), ordered by series and run start."""
    runs = db.Run.__table__
    key = [R.c[k] for k in HISTORY_KEY]
    # coalesce(status): not a predicate the (unselective) status index can serve, so SQLite
    # walks the covering ix_results_board rather than the table (half the time)
    points = (select(*key, func.avg(R.c.value).label("mean"), func.min(R.c.value).label("lo"),
                     func.max(R.c.value).label("hi"), func.min(R.c.ci_low).label("ci_low"),
                     func.max(R.c.ci_high).label("ci_high"), func.count().label("n"))
              .where(func.coalesce(R.c.status, "").in_(db.DONE_STATUSES),
                     R.c.value.is_not(None), R.c.metric.in_(sorted(set(metrics))))
              .group_by(*key).subquery())
    stmt = (select(points, runs.c.started_at.label("at"), runs.c.code_version)
            .join(runs, runs.c.run_id == points.c.run_id))
    return fetch(engine, stmt)
