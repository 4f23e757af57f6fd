"""SQL storage (SQLAlchemy 2.x): SQLite by default, PostgreSQL with only a different URL.

Tables: ``runs`` (one per ``archbench run``), ``hardware`` (fingerprint -> stable facts),
``results`` (one row per metric of a cell, with its provenance), ``cell_claims`` (which run is
measuring which cell right now), ``derived``, ``hardware_peaks``, ``schema_migrations``.

Several runners may share one database. A runner *claims* a cell before measuring it
(:func:`claim`), keeps its claims alive with :func:`heartbeat`, and writes the cell's rows and
drops the claim in one transaction (``store(..., claim=...)``), so one runner at a time
measures a cell and a finished measurement is stored once. A partial unique index on the
identity of finished results (``ux_results_done``) refuses a second copy even from a runner
that ignores claims. :func:`abandon_stale_runs` closes runs whose runner stopped heartbeating.

Every row is made portable before it is written (:func:`sanitize`): what SQLite accepts,
PostgreSQL accepts too, or both refuse it with a ``ValueError`` before anything is written.

Timestamps are the runners' UTC clocks: runners sharing a PostgreSQL server from several
machines need clocks in step to well within a lease (NTP is plenty).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.schema import CreateIndex

from harness.values import INT_RANGE, MAX_PATHS, TRUNCATION_MARK, sanitize  # noqa: F401

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DEFAULT_DB = Path("results") / "archbench.db"
DONE_STATUSES = ("ok", "unavailable", "unsupported")  # finished measurements; not re-run
RUN_STATUSES = ("running", "finished", "interrupted", "abandoned", "failed")
SQLITE_BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for another writer's lock
_SCHEMA_LOCK = 0x61726368  # pg_advisory_xact_lock key that serializes schema DDL
_WRITE = "archbench_write"  # execution option: SQLite transaction takes the write lock at BEGIN


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Migration(Base):
    __tablename__ = "schema_migrations"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class HardwareRow(Base):
    __tablename__ = "hardware"
    fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    stable: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Run(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    suite: Mapped[str] = mapped_column(String(200))
    code_version: Mapped[str] = mapped_column(String(80))
    hardware_fingerprint: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="running")  # one of RUN_STATUSES
    n_cells: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # since v2


class CellClaim(Base):
    """A cell being measured now by ``owner`` (a run id); free again after ``expires_at``."""

    __tablename__ = "cell_claims"
    cell_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hardware_fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    code_version: Mapped[str] = mapped_column(String(80), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32), index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Result(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    cell_id: Mapped[str] = mapped_column(String(32), index=True)
    config_hash: Mapped[str] = mapped_column(String(32))
    code_version: Mapped[str] = mapped_column(String(80))
    hardware_fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    arch: Mapped[str] = mapped_column(String(100))
    arch_version: Mapped[int] = mapped_column(Integer)
    arch_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    task: Mapped[str] = mapped_column(String(100))
    task_version: Mapped[int] = mapped_column(Integer)
    task_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str] = mapped_column(String(40))
    value: Mapped[float | None] = mapped_column(Float)
    higher_is_better: Mapped[bool | None] = mapped_column(Boolean)
    spread: Mapped[float | None] = mapped_column(Float)
    spread_kind: Mapped[str | None] = mapped_column(String(20))
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    p90: Mapped[float | None] = mapped_column(Float)
    p99: Mapped[float | None] = mapped_column(Float)
    n_samples: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    kernel_path: Mapped[str | None] = mapped_column(String(100))
    device: Mapped[str] = mapped_column(String(40))
    dtype: Mapped[str] = mapped_column(String(20))
    threads: Mapped[int] = mapped_column(Integer)
    samples: Mapped[list[float] | None] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    volatile: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    wall_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


# A finished measurement (per metric) exists once per cell, hardware and code version; failed
# rows may repeat, since failed cells are retried.
_done = Result.status.in_(DONE_STATUSES)
DONE_INDEX = Index("ux_results_done", Result.cell_id, Result.hardware_fingerprint,
                   Result.code_version, Result.metric, unique=True,
                   sqlite_where=_done, postgresql_where=_done)


class Derived(Base):
    """Figures computed from stored results (scaling exponents, crossover lengths).

    Recomputed as a whole per hardware fingerprint after each run, never measured directly."""

    __tablename__ = "derived"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hardware_fingerprint: Mapped[str] = mapped_column(String(32), index=True)
    task: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    series: Mapped[str] = mapped_column(String(32))  # task config without the swept key
    kind: Mapped[str] = mapped_column(String(40))  # "scaling_exponent" | "crossover_length"
    arch: Mapped[str] = mapped_column(String(100))
    other_arch: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(40))
    method: Mapped[str] = mapped_column(Text)
    points: Mapped[dict[str, Any]] = mapped_column(JSON)  # the lengths and values used
    code_version: Mapped[str] = mapped_column(String(80))
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Peak(Base):
    """Measured matmul FLOP/s of one machine setting, the yardstick for achieved FLOP/s."""

    __tablename__ = "hardware_peaks"
    hardware_fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
    device: Mapped[str] = mapped_column(String(40), primary_key=True)
    dtype: Mapped[str] = mapped_column(String(20), primary_key=True)
    threads: Mapped[int] = mapped_column(Integer, primary_key=True)
    flops_per_s: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(Text)
    n_samples: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


PROVENANCE_COLUMNS = [c.name for c in Result.__table__.columns if c.name not in
                      ("samples", "summary", "volatile")]

_claims = CellClaim.__table__
_runs = Run.__table__
_results = Result.__table__


# --- connecting ------------------------------------------------------------------------------


def resolve_url(url: str | None = None) -> str:
    """``--db`` wins, then ``ARCHBENCH_DB``, then ``results/archbench.db`` (SQLite).

    A bare path is taken as a SQLite file."""
    url = url or os.environ.get("ARCHBENCH_DB") or str(DEFAULT_DB)
    if "://" not in url:
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    return url


def connect(url: str | None = None) -> Engine:
    """Engine with the schema created or brought up to date and its migration recorded.

    Safe when several processes connect to one fresh database at once: the DDL runs under
    PostgreSQL's advisory lock or SQLite's write lock, and every insert is insert-if-absent."""
    engine = _engine(resolve_url(url))
    _refuse_newer(engine)
    if _up_to_date(engine):  # the usual case: no lock, no write (read-only files work)
        return engine
    with _writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        Base.metadata.create_all(conn)
        _upgrade(conn)
        conn.execute(_insert(conn, Migration).values(version=SCHEMA_VERSION, applied_at=now())
                     .on_conflict_do_nothing())
    return engine


class SchemaError(ValueError):
    """A database this code cannot use as it is; the message is one line."""


def _refuse_newer(engine: Engine) -> None:
    """A database written by a newer archbench is left untouched, with one line saying so."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(Migration.__tablename__):
                return
            newest = conn.scalar(select(func.max(Migration.version)))
    except Exception:  # unreadable here: the locked path reports it
        return
    if newest is not None and newest > SCHEMA_VERSION:
        raise SchemaError(f"{redact(engine.url.render_as_string(hide_password=False))}: "
                          f"database schema version {newest} is newer than this archbench's "
                          f"({SCHEMA_VERSION}); upgrade archbench to use it (nothing was "
                          "changed)")


def _up_to_date(engine: Engine) -> bool:
    """This schema version is recorded (its DDL committed with it) and the index exists."""
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            if not found.has_table(Migration.__tablename__):
                return False
            recorded = conn.scalar(select(Migration.version)
                                   .where(Migration.version == SCHEMA_VERSION))
            return recorded is not None and found.has_index("results", DONE_INDEX.name)
    except Exception:  # anything odd: the locked path below sorts it out or says why
        return False


def _engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"archbench stores results in SQLite or PostgreSQL, not {backend!r}")
    if backend == "postgresql":
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    # SQLite: the driver's own transaction handling is switched off so that write transactions
    # can begin IMMEDIATE (taking the write lock up front, waiting up to the busy timeout for
    # it) instead of failing with "database is locked" when a read turns into a write. WAL lets
    # readers go on while one writer writes.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        _sqlite_wal(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _sqlite_wal(dbapi_conn: Any) -> None:
    """Switch a SQLite file to WAL (it stays so); in-memory databases keep their mode."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            mode = dbapi_conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except Exception as err:  # sqlite3.OperationalError
            if "locked" not in str(err):  # e.g. a read-only file: keep its journal mode
                log.debug("SQLite journal mode left as is: %s", err)
                return
            if time.monotonic() > deadline:
                raise
            mode = None
        if mode in ("wal", "memory") or time.monotonic() > deadline:
            if mode not in ("wal", "memory"):
                log.warning("SQLite database stays in %s journal mode (WAL refused)", mode)
            return
        time.sleep(0.05)


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction (SQLite: ``BEGIN IMMEDIATE``): committed on exit, rolled back on
    error."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


def _insert(conn: Connection, model: type[Base]) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(model.__table__)


def _upgrade(conn: Connection) -> None:
    """Bring a schema-1 database to schema 2, idempotently, under the schema lock.

    Minimal on purpose (proper alembic migrations come later): create_all has already added
    ``cell_claims``; this adds ``runs.heartbeat_at`` and the unique index on finished
    results. A database that already holds a finished result twice keeps all its rows and
    goes without the index (with a warning on each connect) rather than failing."""
    found = inspect(conn)
    if "heartbeat_at" not in {c["name"] for c in found.get_columns("runs")}:
        kind = DateTime(timezone=True).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN heartbeat_at {kind}")
    if found.has_index("results", DONE_INDEX.name):
        return
    try:
        with conn.begin_nested():
            conn.execute(CreateIndex(DONE_INDEX, if_not_exists=True))
    except IntegrityError:
        log.warning("this database holds some finished results more than once (from runners "
                    "before schema %d); they are all kept, but the unique index %s that "
                    "prevents new duplicates is not created until they are resolved",
                    SCHEMA_VERSION, DONE_INDEX.name)


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# --- portable values (harness.values) -------------------------------------------------------


def sanitize_result(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result row ready to store: see :func:`sanitize`. Notes go first in ``error`` (a
    line ``stored with changes: ...``; the original error stays the last line), non-finite
    JSON paths into ``extra["non_finite"]`` (at most ``MAX_PATHS``, then ``"... N more"``)."""
    out, notes, non_finite = sanitize(Result, row)
    if non_finite:
        listed = non_finite[:MAX_PATHS]
        if len(non_finite) > MAX_PATHS:
            listed.append(f"... {len(non_finite) - MAX_PATHS} more")
        extra = out.get("extra")
        if extra is None:
            extra = {}
        if isinstance(extra, dict):
            previous = extra.get("non_finite")
            extra = {**extra, "non_finite": (previous if isinstance(previous, list) else [])
                     + listed}
            out["extra"] = extra
        else:
            notes.append("non-finite numbers stored as null at " + ", ".join(listed))
    if notes:
        note = "stored with changes: " + "; ".join(notes)
        out["error"] = f"{note}\n{out['error']}" if out.get("error") else note
    return out


def _sanitized(model: type[Base], row: Mapping[str, Any], what: str) -> dict[str, Any]:
    """:func:`sanitize` for tables without an error column: changes are logged."""
    out, notes, non_finite = sanitize(model, row)
    if non_finite:
        notes.append("non-finite numbers stored as null at " + ", ".join(non_finite[:MAX_PATHS]))
    if notes:
        log.warning("%s stored with changes: %s", what, "; ".join(notes))
    return out


# --- claims ----------------------------------------------------------------------------------


def _key(cell_id: str, fingerprint: str, version: str, **more: str) -> dict[str, Any]:
    """A claim's key columns, sanitized as rows are (so long values match their rows)."""
    return _sanitized(CellClaim, {"cell_id": cell_id, "hardware_fingerprint": fingerprint,
                                  "code_version": version, **more}, "claim")


def _where(table: Any, key: dict[str, Any]) -> Any:
    return and_(*(table.c[name] == key[name]
                  for name in ("cell_id", "hardware_fingerprint", "code_version")))


def _lease(lease_s: float) -> timedelta:
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
    return timedelta(seconds=lease_s)


def claim(engine: Engine, cell_id: str, fingerprint: str, version: str, owner: str,
          lease_s: float, *, skip_failed_since: datetime | None = None) -> bool:
    """Claim a cell for ``owner`` (its run id) for ``lease_s`` seconds; True if it may measure.

    False when the cell already has a finished result (status in ``DONE_STATUSES``) for this
    fingerprint and code version, or another owner holds an unexpired claim on it; an expired
    claim is taken over, and ``owner``'s own claim is renewed. With ``skip_failed_since`` (an
    aware UTC datetime, e.g. the run's start), also False when the cell has an unfinished
    result (failed, timeout, ...) stored since then: another runner just tried it.

    Atomic on both backends: the claim row is written first (INSERT ... ON CONFLICT DO UPDATE
    WHERE expired or ours), then the results are checked in the same transaction, which under
    SQLite's write lock, or PostgreSQL's row lock with READ COMMITTED, sees every store that
    could have released the claim before us."""
    lease = _lease(lease_s)
    t = now()
    key = _key(cell_id, fingerprint, version, owner=owner)
    c = _claims.c
    with _writing(engine) as conn:
        stmt = _insert(conn, CellClaim).values(**key, claimed_at=t, heartbeat_at=t,
                                               expires_at=t + lease)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.cell_id, c.hardware_fingerprint, c.code_version],
            set_={"owner": stmt.excluded.owner,
                  "claimed_at": case((c.owner == key["owner"], c.claimed_at),
                                     else_=stmt.excluded.claimed_at),
                  "heartbeat_at": stmt.excluded.heartbeat_at,
                  "expires_at": stmt.excluded.expires_at},
            where=or_(c.owner == key["owner"], c.expires_at <= t),
        ).returning(c.owner)
        if conn.execute(stmt).first() is None:
            return False  # another owner's live claim
        refuse = [_results.c.status.in_(DONE_STATUSES)]
        if skip_failed_since is not None:
            refuse.append(_results.c.created_at >= skip_failed_since)
        taken = select(literal(1)).where(_where(_results, key), or_(*refuse)).limit(1)
        if conn.execute(taken).first() is not None:
            conn.execute(delete(_claims).where(_where(_claims, key)))
            return False
    return True


def release(engine: Engine, cell_id: str, fingerprint: str, version: str, owner: str) -> bool:
    """Drop ``owner``'s claim on a cell (e.g. a cell it decided not to run); False if it held
    none (never claimed, or taken over after it expired)."""
    with _writing(engine) as conn:
        gone = conn.execute(delete(_claims).where(
            _where(_claims, _key(cell_id, fingerprint, version)), _claims.c.owner == owner))
    return gone.rowcount > 0


def heartbeat(engine: Engine, owner: str, lease_s: float) -> int:
    """``owner`` is alive: renew all its claims for ``lease_s`` seconds and stamp its run.

    Returns how many claims it still holds. A run marked abandoned while it was in fact only
    stalled is set running again (claims it lost meanwhile stay lost: storing for them
    writes nothing). Call it from a background thread at intervals well under ``lease_s``
    (cells can run longer than a lease)."""
    lease = _lease(lease_s)
    t = now()
    with _writing(engine) as conn:  # runs before claims: the lock order of every writer here
        conn.execute(update(_runs).where(_runs.c.run_id == owner).values(heartbeat_at=t))
        conn.execute(update(_runs).where(_runs.c.run_id == owner,
                                         _runs.c.status == "abandoned")
                     .values(status="running", finished_at=None))
        held = conn.execute(update(_claims).where(_claims.c.owner == owner)
                            .values(heartbeat_at=t, expires_at=t + lease))
    return held.rowcount


def abandon_stale_runs(engine: Engine, lease_s: float) -> int:
    """Mark ``running`` runs without a heartbeat for ``lease_s`` seconds as ``abandoned``
    (runs from before schema 2, which never heartbeat, count from their start) and drop their
    claims. Returns how many runs it marked."""
    cutoff = now() - _lease(lease_s)
    r = _runs.c
    stale_since = or_(and_(r.heartbeat_at.is_not(None), r.heartbeat_at < cutoff),
                      and_(r.heartbeat_at.is_(None), r.started_at < cutoff))
    with _writing(engine) as conn:
        stale = conn.scalars(select(r.run_id).where(r.status == "running", stale_since)
                             .order_by(r.run_id).with_for_update()).all()
        if stale:
            conn.execute(update(_runs).where(r.run_id.in_(stale))
                         .values(status="abandoned", finished_at=now()))
            conn.execute(delete(_claims).where(_claims.c.owner.in_(stale)))
    if stale:
        log.info("marked %d run(s) abandoned (no heartbeat for %g s)", len(stale), lease_s)
    return len(stale)


def abandon_runs(engine: Engine, run_ids: Iterable[str]) -> int:
    """Mark these runs ``abandoned`` if they are still ``running`` (their runner is known to
    be dead) and drop their claims; returns how many it marked."""
    ids = sorted(set(run_ids))
    if not ids:
        return 0
    r = _runs.c
    with _writing(engine) as conn:
        dead = conn.scalars(select(r.run_id).where(r.run_id.in_(ids), r.status == "running")
                            .with_for_update()).all()
        if dead:
            conn.execute(update(_runs).where(r.run_id.in_(dead))
                         .values(status="abandoned", finished_at=now()))
            conn.execute(delete(_claims).where(_claims.c.owner.in_(dead)))
    return len(dead)


def claims(engine: Engine) -> list[dict[str, Any]]:
    """Every current claim (expired ones too), for reports and tests."""
    with Session(engine) as s:
        return [{c.name: getattr(row, c.name) for c in _claims.columns}
                for row in s.scalars(select(CellClaim).order_by(CellClaim.claimed_at))]


# --- runs, hardware, results -----------------------------------------------------------------


def ensure_hardware(engine: Engine, fingerprint: str, stable: dict[str, Any]) -> None:
    row = _sanitized(HardwareRow, {"fingerprint": fingerprint, "stable": stable}, "hardware")
    with _writing(engine) as conn:
        conn.execute(_insert(conn, HardwareRow).values(**row, first_seen=now())
                     .on_conflict_do_nothing())


def start_run(engine: Engine, run_id: str, suite: str, code_version: str, fingerprint: str,
              n_cells: int) -> None:
    t = now()
    row = _sanitized(Run, {"run_id": run_id, "suite": suite, "code_version": code_version,
                           "hardware_fingerprint": fingerprint, "n_cells": n_cells}, "run")
    with _writing(engine) as conn:
        conn.execute(insert(_runs).values(**row, started_at=t, heartbeat_at=t,
                                          status="running"))


def finish_run(engine: Engine, run_id: str, status: str) -> None:
    """Close a run (``finished``, ``interrupted``, ``failed``...) and drop its claims."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    with _writing(engine) as conn:
        conn.execute(update(_runs).where(_runs.c.run_id == run_id)
                     .values(status=status, finished_at=now()))
        conn.execute(delete(_claims).where(_claims.c.owner == run_id))


def runs(engine: Engine) -> list[dict[str, Any]]:
    """Every run as a dict, oldest first."""
    with Session(engine) as s:
        return [{c.name: getattr(row, c.name) for c in _runs.columns}
                for row in s.scalars(select(Run).order_by(Run.started_at, Run.run_id))]


def done_cells(engine: Engine, fingerprint: str, code_version: str) -> set[str]:
    """Cells with a finished measurement for this hardware and code version."""
    stmt = select(Result.cell_id).where(
        Result.hardware_fingerprint == fingerprint, Result.code_version == code_version,
        Result.status.in_(DONE_STATUSES),
    ).distinct()
    with Session(engine) as s:
        return set(s.scalars(stmt))


def store(engine: Engine, rows: Iterable[dict[str, Any]],
          claim: tuple[str, str, str, str] | None = None) -> int:
    """Insert one cell's rows in a single transaction (all or nothing); returns rows written.

    Rows are made portable first (:func:`sanitize_result`); an integer out of range raises
    ``ValueError`` before anything is written. With ``claim=(cell_id, fingerprint, version,
    owner)`` the rows are written, and the claim dropped, only if ``owner`` still holds that
    claim (then every row must belong to that cell); otherwise nothing is written and 0 is
    returned. If the cell already has a finished result (the unique index refuses a second
    copy), nothing is written, the claim is dropped and 0 is returned."""
    rows = [sanitize_result(row) for row in rows]
    if claim is not None:
        cell_id, fingerprint, version, owner = claim
        key = _key(cell_id, fingerprint, version, owner=owner)
        for row in rows:
            if any(row.get(k) != key[k] for k in ("cell_id", "hardware_fingerprint",
                                                   "code_version")):
                raise ValueError(f"store(claim=...): a row for cell {row.get('cell_id')!r} "
                                 f"does not belong to the claimed cell {cell_id!r}")
    try:
        with _writing(engine) as conn:
            if claim is not None:
                where = _where(_claims, key)
                held = conn.execute(select(_claims.c.owner).where(where)
                                    .with_for_update()).scalar_one_or_none()
                if held != key["owner"]:
                    log.warning("cell %s: the claim of %s was taken over (held by %s); its "
                                "result is not stored", cell_id, owner, held)
                    return 0
                conn.execute(delete(_claims).where(where))
            for row in rows:  # one by one: rows of one cell need not share their keys
                conn.execute(insert(_results), row)
    except IntegrityError:
        if not _already_done(engine, rows):
            raise
        log.warning("cell %s already has a finished result for this hardware and code "
                    "version; the second copy is not stored", rows[0].get("cell_id"))
        if claim is not None:
            release(engine, cell_id, fingerprint, version, owner)
        return 0
    return len(rows)


def _already_done(engine: Engine, rows: list[dict[str, Any]]) -> bool:
    r = _results.c
    with engine.connect() as conn:
        for row in rows:
            if row.get("status") not in DONE_STATUSES:
                continue
            hit = conn.execute(select(literal(1)).where(
                r.cell_id == row.get("cell_id"),
                r.hardware_fingerprint == row.get("hardware_fingerprint"),
                r.code_version == row.get("code_version"), r.metric == row.get("metric"),
                r.status.in_(DONE_STATUSES)).limit(1)).first()
            if hit is not None:
                return True
    return False


def results(engine: Engine) -> list[dict[str, Any]]:
    """Every result row as a dict, oldest first."""
    with Session(engine) as s:
        return [_as_dict(r) for r in s.scalars(select(Result).order_by(Result.id))]


def wall_times(engine: Engine) -> dict[tuple[str, str], list[float]]:
    """Wall seconds of every finished cell, by (architecture, task): what planning's ETA reads."""
    stmt = select(Result.cell_id, Result.arch, Result.task, Result.wall_s).where(
        Result.status.in_(DONE_STATUSES), Result.wall_s.is_not(None)).distinct()
    out: dict[tuple[str, str], list[float]] = {}
    with Session(engine) as s:
        for _, arch, task, wall in s.execute(stmt):
            out.setdefault((arch, task), []).append(float(wall))
    return out


def hardware(engine: Engine) -> dict[str, dict[str, Any]]:
    with Session(engine) as s:
        return {h.fingerprint: h.stable for h in s.scalars(select(HardwareRow))}


def count(engine: Engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count(Result.id))) or 0


def _as_dict(row: Result) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in Result.__table__.columns}


def replace_derived(engine: Engine, fingerprint: str, rows: Iterable[dict[str, Any]]) -> int:
    """Swap this fingerprint's derived figures for ``rows`` in one transaction."""
    rows = [_sanitized(Derived, {"hardware_fingerprint": fingerprint, **row}, "derived figure")
            for row in rows]
    with _writing(engine) as conn:
        conn.execute(delete(Derived.__table__)
                     .where(Derived.__table__.c.hardware_fingerprint == fingerprint))
        for row in rows:
            conn.execute(insert(Derived.__table__), row)
    return len(rows)


def derived(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as s:
        stmt = select(Derived).order_by(Derived.hardware_fingerprint, Derived.task,
                                        Derived.metric, Derived.kind, Derived.arch,
                                        Derived.other_arch)
        return [{c.name: getattr(r, c.name) for c in Derived.__table__.columns
                 if c.name not in ("id", "computed_at")} for r in s.scalars(stmt)]


def peaks(engine: Engine) -> dict[tuple[str, str, str, int], float]:
    """(fingerprint, device, dtype, threads) -> measured matmul FLOP/s."""
    with Session(engine) as s:
        return {(p.hardware_fingerprint, p.device, p.dtype, p.threads): p.flops_per_s
                for p in s.scalars(select(Peak))}


def store_peak(engine: Engine, fingerprint: str, device: str, dtype: str, threads: int,
               reading: dict[str, Any]) -> None:
    """Insert or replace one setting's matmul peak; a non-finite reading is not stored."""
    row = _sanitized(Peak, {"hardware_fingerprint": fingerprint, "device": device,
                            "dtype": dtype, "threads": threads, **reading}, "matmul peak")
    if row.get("flops_per_s") is None:
        log.warning("matmul peak not stored: no finite FLOP/s in %r", reading)
        return
    row.setdefault("measured_at", now())
    keys = ("hardware_fingerprint", "device", "dtype", "threads")
    with _writing(engine) as conn:
        stmt = _insert(conn, Peak).values(**row)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: stmt.excluded[k] for k in row if k not in keys}))
