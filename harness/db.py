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

import json
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

from harness.ids import SETTING_KEYS, setting_id
from harness.values import INT_RANGE, MAX_PATHS, TRUNCATION_MARK, sanitize  # noqa: F401

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # the alembic head is harness/migrations/versions/0005_*
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
    # since v3: "run" | "nightly" | "confirm"; the suite as planned; what was re-measured
    kind: Mapped[str | None] = mapped_column(String(20))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rerun: Mapped[str | None] = mapped_column(String(10))
    nightly_id: Mapped[str | None] = mapped_column(String(32), index=True)


class CellClaim(Base):
    """A cell being measured now by ``owner`` (a run id); free again after ``expires_at``."""

    __tablename__ = "cell_claims"
    cell_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hardware_fingerprint: Mapped[str] = mapped_column(String(32), primary_key=True)
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
    # since v3: the setting across versions and seeds (harness.ids), and the source digests
    setting_id: Mapped[str | None] = mapped_column(String(32))
    arch_digest: Mapped[str | None] = mapped_column(String(16))
    task_digest: Mapped[str | None] = mapped_column(String(16))


# A finished measurement (per metric) exists once per cell, hardware and run; failed rows may
# repeat, since failed cells are retried. Another run may measure the cell again (--rerun all,
# nightly runs).
_done = Result.status.in_(DONE_STATUSES)
DONE_INDEX = Index("ux_results_done", Result.cell_id, Result.hardware_fingerprint,
                   Result.run_id, Result.metric, unique=True,
                   sqlite_where=_done, postgresql_where=_done)
SERIES_INDEX = Index("ix_results_series", Result.hardware_fingerprint, Result.setting_id,
                     Result.metric)
# what queries.board_rows and history_points group by (newest row per setting, metric and
# seed; a point per run): covering both
BOARD_INDEX = Index("ix_results_board", Result.hardware_fingerprint, Result.setting_id,
                    Result.metric, Result.seed, Result.status, Result.run_id, Result.id,
                    Result.value, Result.ci_low, Result.ci_high)


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


class VariantRow(Base):
    """A variant as it was when measured (one row per name and source digest): what the site
    and exports show of it, whatever code is installed when they are made."""

    __tablename__ = "variants"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(100))
    causal: Mapped[bool] = mapped_column(Boolean)
    papers: Mapped[list[Any]] = mapped_column(JSON)
    config_keys: Mapped[list[Any]] = mapped_column(JSON)
    doc: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class TaskRow(Base):
    """A task as it was when measured (one row per name and source digest)."""

    __tablename__ = "tasks"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(16), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    headline: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # defaults
    ranked: Mapped[bool] = mapped_column(Boolean)
    unranked_reason: Mapped[str] = mapped_column(Text)
    needs_causal: Mapped[bool] = mapped_column(Boolean)
    doc: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    sweep_key: Mapped[str | None] = mapped_column(String(100))  # what its length sweeps vary


class MetricSpecRow(Base):
    """A metric a task version declares: unit, direction and meaning."""

    __tablename__ = "metric_specs"
    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    task_digest: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    unit: Mapped[str] = mapped_column(String(40))
    higher_is_better: Mapped[bool | None] = mapped_column(Boolean)
    doc: Mapped[str] = mapped_column(Text)
    swept: Mapped[bool | None] = mapped_column(Boolean)  # fitted against the task's sweep key
    role: Mapped[str | None] = mapped_column(String(40))  # its part in a derived figure


class Nightly(Base):
    """One ``archbench nightly``: its runs carry its id; its report is kept here too."""

    __tablename__ = "nightlies"
    nightly_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hardware_fingerprint: Mapped[str] = mapped_column(String(32))
    code_version: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="running")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ChangePoint(Base):
    """A change of one series (machine, setting, metric) found by regression detection;
    confirmed ones start the series' history afresh."""

    __tablename__ = "change_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hardware_fingerprint: Mapped[str] = mapped_column(String(32))
    setting_id: Mapped[str] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(100))
    arch: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[str] = mapped_column(String(32))  # the run where the change showed
    confirm_run_id: Mapped[str | None] = mapped_column(String(32))
    nightly_id: Mapped[str | None] = mapped_column(String(32))
    change: Mapped[str] = mapped_column(String(20))  # regression | improvement | changed
    confirmed: Mapped[bool] = mapped_column(Boolean)
    rel_change: Mapped[float | None] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[str] = mapped_column(String(10))
    method: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


CHANGE_INDEX = Index("ix_change_points_series", ChangePoint.hardware_fingerprint,
                     ChangePoint.setting_id, ChangePoint.metric)

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


# alembic revisions, oldest first; schema N is REVISIONS[N-1]
REVISIONS = ("0001", "0002", "0003", "0004", "0005")
HEAD = REVISIONS[SCHEMA_VERSION - 1]
MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaError(ValueError):
    """A database this code cannot use as it is; the message is one line."""


def connect(url: str | None = None) -> Engine:
    """Engine on a database at this code's schema; an empty one is created at it.

    A database at an older schema raises :class:`SchemaError` asking for ``archbench db
    upgrade`` (nothing is changed), as does one newer than this code. Safe when several
    processes create one fresh database at once: the DDL runs under PostgreSQL's advisory
    lock or SQLite's write lock, and the state is checked again under it."""
    engine = _engine(resolve_url(url))
    if _state(engine) == "current":  # the usual case: no lock, no write (read-only files work)
        return engine
    with _writing(engine) as conn:
        _schema_lock(conn)
        if _state(conn) == "empty":
            _create(conn)
    return engine


def upgrade(url: str | None = None) -> tuple[int | None, int]:
    """Bring a database to this code's schema with the alembic migrations (an empty one is
    created at it); returns (schema before or None if empty, schema after). One transaction
    under the schema lock: a failed migration leaves the database as it was (PostgreSQL, and
    SQLite, whose DDL is transactional too)."""
    engine = _engine(resolve_url(url))
    with _writing(engine) as conn:
        _schema_lock(conn)
        found = _inspect_version(conn)
        if found == "empty":
            _create(conn)
            return None, SCHEMA_VERSION
        if found > SCHEMA_VERSION:
            raise _newer(conn, found)
        if found == SCHEMA_VERSION and _stamped(conn):
            return found, found
        from alembic import command  # only here: connecting never imports alembic

        cfg = _alembic_config(conn)
        if not _stamped(conn):  # written before alembic: its schema_migrations says where
            command.stamp(cfg, REVISIONS[found - 1])
        command.upgrade(cfg, "head")
        _record(conn)
    log.info("database upgraded from schema %s to %s", found, SCHEMA_VERSION)
    return found, SCHEMA_VERSION


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _schema_lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})


def _create(conn: Connection) -> None:
    """An empty database: every table at the head schema, stamped as such."""
    Base.metadata.create_all(conn)
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS alembic_version (version_num "
                         "VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY "
                         "(version_num))")
    conn.exec_driver_sql("DELETE FROM alembic_version")
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})
    _record(conn)


def _record(conn: Connection) -> None:
    """schema_migrations keeps the number too: archbench before alembic reads it to refuse a
    newer database."""
    conn.execute(_insert(conn, Migration).values(version=SCHEMA_VERSION, applied_at=now())
                 .on_conflict_do_nothing())


def _stamped(conn: Connection) -> bool:
    return inspect(conn).has_table("alembic_version")


def _inspect_version(conn: Connection) -> int | str:
    """The schema number of a database, or "empty"; a revision this code does not know counts
    as newer than it."""
    found = inspect(conn)
    if not found.has_table(Result.__tablename__):  # whatever else is there, ours is not
        return "empty"
    legacy = None
    if found.has_table(Migration.__tablename__):
        legacy = conn.scalar(select(func.max(Migration.version)))
    if found.has_table("alembic_version"):
        rev = conn.scalar(text("SELECT version_num FROM alembic_version"))
        if rev in REVISIONS:
            return max(REVISIONS.index(rev) + 1, legacy or 0)
        if rev is not None:
            return max(SCHEMA_VERSION + 1, legacy or 0)
    return legacy if legacy is not None else 1


def _newer(conn: Connection, found: int) -> SchemaError:
    return SchemaError(f"{redact(conn.engine.url.render_as_string(hide_password=False))}: "
                       f"database schema version {found} is newer than this archbench's "
                       f"({SCHEMA_VERSION}); upgrade archbench to use it (nothing was changed)")


def _state(engine_or_conn: Engine | Connection) -> str:
    """"current" or "empty"; raises SchemaError for a newer or older database."""
    if isinstance(engine_or_conn, Engine):
        try:
            with engine_or_conn.connect() as conn:
                return _state(conn)
        except SchemaError:
            raise
        except Exception:  # unreadable here: the locked path reports it
            return "empty"
    conn = engine_or_conn
    found = _inspect_version(conn)
    if found == "empty":
        return "empty"
    if found > SCHEMA_VERSION:
        raise _newer(conn, found)
    if found < SCHEMA_VERSION or not _stamped(conn):
        where = redact(conn.engine.url.render_as_string(hide_password=False))
        raise SchemaError(f"{where}: database schema version {found} is older than this "
                          f"archbench's ({SCHEMA_VERSION}); run `archbench --db {where} db "
                          "upgrade` (back the database up first; nothing was changed)")
    return "current"


def _engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"archbench stores results in SQLite or PostgreSQL, not {backend!r}")
    if backend == "postgresql":
        return create_engine(url, json_serializer=_json_dumps)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
                           json_serializer=_json_dumps)

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


def _json_dumps(value: Any) -> str:
    """JSON columns are stored with sorted keys (since schema 3): the stored text is then the
    canonical text, which exports pass through without decoding."""
    return json.dumps(value, sort_keys=True)


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


def _key(cell_id: str, fingerprint: str, **more: str) -> dict[str, Any]:
    """A claim's key columns, sanitized as rows are (so long values match their rows)."""
    return _sanitized(CellClaim, {"cell_id": cell_id, "hardware_fingerprint": fingerprint,
                                  **more}, "claim")


def _where(table: Any, key: dict[str, Any]) -> Any:
    return and_(*(table.c[name] == key[name] for name in ("cell_id", "hardware_fingerprint")))


def _lease(lease_s: float) -> timedelta:
    if not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
    return timedelta(seconds=lease_s)


def claim(engine: Engine, cell_id: str, fingerprint: str, owner: str, lease_s: float, *,
          done_since: datetime | None = None,
          skip_failed_since: datetime | None = None) -> bool:
    """Claim a cell for ``owner`` (its run id) for ``lease_s`` seconds; True if it may measure.

    False when the cell already has a finished result (status in ``DONE_STATUSES``) on this
    machine (with ``done_since``, one stored since then: a run that re-measures everything
    passes its start), or another owner holds an unexpired claim on it; an expired claim is
    taken over, and ``owner``'s own claim is renewed. With ``skip_failed_since`` (an aware UTC
    datetime, e.g. the run's start), also False when the cell has an unfinished result
    (failed, timeout, ...) stored since then: another runner just tried it.

    Atomic on both backends: the claim row is written first (INSERT ... ON CONFLICT DO UPDATE
    WHERE expired or ours), then the results are checked in the same transaction, which under
    SQLite's write lock, or PostgreSQL's row lock with READ COMMITTED, sees every store that
    could have released the claim before us."""
    lease = _lease(lease_s)
    t = now()
    key = _key(cell_id, fingerprint, owner=owner)
    c = _claims.c
    with _writing(engine) as conn:
        stmt = _insert(conn, CellClaim).values(**key, claimed_at=t, heartbeat_at=t,
                                               expires_at=t + lease)
        stmt = stmt.on_conflict_do_update(
            index_elements=[c.cell_id, c.hardware_fingerprint],
            set_={"owner": stmt.excluded.owner,
                  "claimed_at": case((c.owner == key["owner"], c.claimed_at),
                                     else_=stmt.excluded.claimed_at),
                  "heartbeat_at": stmt.excluded.heartbeat_at,
                  "expires_at": stmt.excluded.expires_at},
            where=or_(c.owner == key["owner"], c.expires_at <= t),
        ).returning(c.owner)
        if conn.execute(stmt).first() is None:
            return False  # another owner's live claim
        finished = _results.c.status.in_(DONE_STATUSES)
        if done_since is not None:
            finished = and_(finished, _results.c.created_at >= done_since)
        refuse = [finished]
        if skip_failed_since is not None:
            refuse.append(_results.c.created_at >= skip_failed_since)
        taken = select(literal(1)).where(_where(_results, key), or_(*refuse)).limit(1)
        if conn.execute(taken).first() is not None:
            conn.execute(delete(_claims).where(_where(_claims, key)))
            return False
    return True


def release(engine: Engine, cell_id: str, fingerprint: str, owner: str) -> bool:
    """Drop ``owner``'s claim on a cell (e.g. a cell it decided not to run); False if it held
    none (never claimed, or taken over after it expired)."""
    with _writing(engine) as conn:
        gone = conn.execute(delete(_claims).where(
            _where(_claims, _key(cell_id, fingerprint)), _claims.c.owner == owner))
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
              n_cells: int, *, kind: str = "run", config: dict[str, Any] | None = None,
              rerun: str | None = None, nightly_id: str | None = None) -> None:
    t = now()
    row = _sanitized(Run, {"run_id": run_id, "suite": suite, "code_version": code_version,
                           "hardware_fingerprint": fingerprint, "n_cells": n_cells,
                           "kind": kind, "config": config, "rerun": rerun,
                           "nightly_id": nightly_id}, "run")
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


def done_cells(engine: Engine, fingerprint: str) -> set[str]:
    """Cells with a finished measurement on this machine (the cell id carries the variant's
    and task's source digests, so a changed variant's cells are not among them)."""
    stmt = select(Result.cell_id).where(
        Result.hardware_fingerprint == fingerprint, Result.status.in_(DONE_STATUSES),
    ).distinct()
    with Session(engine) as s:
        return set(s.scalars(stmt))


def done_settings(engine: Engine, fingerprint: str) -> set[tuple[str, int]]:
    """(setting id, seed) pairs with a finished measurement on this machine, by any version of
    the code: what ``--rerun none`` leaves alone."""
    stmt = select(Result.setting_id, Result.seed).where(
        Result.hardware_fingerprint == fingerprint, Result.status.in_(DONE_STATUSES),
        Result.setting_id.is_not(None)).distinct()
    with Session(engine) as s:
        return {(sid, int(seed)) for sid, seed in s.execute(stmt)}


def with_setting_id(row: dict[str, Any]) -> dict[str, Any]:
    """Every stored row names its setting (the runner sets it; here for other callers)."""
    if row.get("setting_id") is None and all(k in row for k in SETTING_KEYS):
        row["setting_id"] = setting_id(row)
    return row


def store(engine: Engine, rows: Iterable[dict[str, Any]],
          claim: tuple[str, str, str] | None = None) -> int:
    """Insert one cell's rows in a single transaction (all or nothing); returns rows written.

    Rows are made portable first (:func:`sanitize_result`); an integer out of range raises
    ``ValueError`` before anything is written. With ``claim=(cell_id, fingerprint, owner)``
    the rows are written, and the claim dropped, only if ``owner`` still holds that
    claim (then every row must belong to that cell); otherwise nothing is written and 0 is
    returned. If the cell already has a finished result (the unique index refuses a second
    copy for the same run), nothing is written, the claim is dropped and 0 is returned."""
    rows = [with_setting_id(sanitize_result(row)) for row in rows]
    if claim is not None:
        cell_id, fingerprint, owner = claim
        key = _key(cell_id, fingerprint, owner=owner)
        for row in rows:
            if any(row.get(k) != key[k] for k in ("cell_id", "hardware_fingerprint")):
                raise ValueError(f"store(claim=...): a row for cell {row.get('cell_id')!r} "
                                 f"does not belong to the claimed cell {cell_id!r}")
    try:
        with _writing(engine) as conn:
            if claim is not None:
                where = _where(_claims, key)
                held = conn.execute(select(_claims.c.owner, _claims.c.claimed_at).where(where)
                                    .with_for_update()).first()
                if held is None or held.owner != key["owner"]:
                    log.warning("cell %s: the claim of %s was taken over (held by %s); its "
                                "result is not stored", cell_id, owner,
                                held.owner if held else None)
                    return 0
                conn.execute(delete(_claims).where(where))
                meanwhile = select(literal(1)).where(
                    _where(_results, key), _results.c.status.in_(DONE_STATUSES),
                    _results.c.created_at >= held.claimed_at).limit(1)
                if conn.execute(meanwhile).first() is not None:  # a runner ignoring claims
                    log.warning("cell %s was finished by another runner while %s measured "
                                "it; the second copy is not stored", cell_id, owner)
                    return 0
            for row in rows:  # one by one: rows of one cell need not share their keys
                conn.execute(insert(_results), row)
    except IntegrityError:
        if not _already_done(engine, rows):
            raise
        log.warning("cell %s already has a finished result for this hardware and run; the "
                    "second copy is not stored", rows[0].get("cell_id"))
        if claim is not None:
            release(engine, cell_id, fingerprint, owner)
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
                r.run_id == row.get("run_id"), r.metric == row.get("metric"),
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


# --- what was measured: variants, tasks, metric specs ----------------------------------------


def store_catalog(engine: Engine, variants: Iterable[dict[str, Any]],
                  tasks: Iterable[dict[str, Any]]) -> None:
    """Record variants and tasks (``harness.catalog`` entries with a ``digest``) as they are
    now, once per (name, digest); a task's ``metrics`` go to metric_specs."""
    t = now()
    with _writing(engine) as conn:
        for v in variants:
            row = _sanitized(VariantRow, {k: v.get(k) for k in VariantRow.__table__.c.keys()
                                          if k != "first_seen"}, "variant")
            conn.execute(_insert(conn, VariantRow).values(**row, first_seen=t)
                         .on_conflict_do_nothing())
        for task in tasks:
            row = _sanitized(TaskRow, {k: task.get(k) for k in TaskRow.__table__.c.keys()
                                       if k != "first_seen"}, "task")
            conn.execute(_insert(conn, TaskRow).values(**row, first_seen=t)
                         .on_conflict_do_nothing())
            for m in task.get("metrics", ()):
                spec = _sanitized(MetricSpecRow, {"task": task["name"],
                                                  "task_digest": task["digest"], **m},
                                  "metric spec")
                conn.execute(_insert(conn, MetricSpecRow).values(**spec)
                             .on_conflict_do_nothing())


def catalog(engine: Engine) -> dict[str, dict[str, dict[str, Any]]]:
    """The newest stored entry per variant and per task (tasks with their ``metrics``), as
    {"architectures": {name: entry}, "tasks": {name: entry}}: what the site shows."""
    out: dict[str, dict[str, dict[str, Any]]] = {"architectures": {}, "tasks": {}}
    with engine.connect() as conn:
        for kind, table in (("architectures", VariantRow.__table__),
                            ("tasks", TaskRow.__table__)):
            for row in conn.execute(select(table).order_by(table.c.first_seen)).mappings():
                out[kind][row["name"]] = dict(row)  # newest last wins
        specs = MetricSpecRow.__table__
        for row in conn.execute(select(specs)).mappings():
            entry = out["tasks"].get(row["task"])
            if entry is not None and entry["digest"] == row["task_digest"]:
                entry.setdefault("metrics", []).append(
                    {k: row[k] for k in ("name", "unit", "higher_is_better", "doc", "swept",
                                         "role")})
    for entry in out["tasks"].values():
        entry.setdefault("metrics", [])
    return out


# --- nightly runs and change points ----------------------------------------------------------


def start_nightly(engine: Engine, nightly_id: str, fingerprint: str, code_version: str,
                  config: dict[str, Any]) -> None:
    row = _sanitized(Nightly, {"nightly_id": nightly_id, "hardware_fingerprint": fingerprint,
                               "code_version": code_version, "config": config}, "nightly")
    with _writing(engine) as conn:
        conn.execute(insert(Nightly.__table__).values(**row, started_at=now(),
                                                      status="running"))


def finish_nightly(engine: Engine, nightly_id: str, status: str, exit_code: int,
                   report: dict[str, Any] | None) -> None:
    row = _sanitized(Nightly, {"report": report}, "nightly report")
    with _writing(engine) as conn:
        conn.execute(update(Nightly.__table__)
                     .where(Nightly.__table__.c.nightly_id == nightly_id)
                     .values(status=status, exit_code=exit_code, finished_at=now(), **row))


def nightlies(engine: Engine) -> list[dict[str, Any]]:
    t = Nightly.__table__
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.started_at)).mappings()]


def store_change_point(engine: Engine, row: dict[str, Any]) -> None:
    row = _sanitized(ChangePoint, row, "change point")
    with _writing(engine) as conn:
        conn.execute(insert(ChangePoint.__table__).values(**row, detected_at=now()))


def change_points(engine: Engine, confirmed: bool | None = None) -> list[dict[str, Any]]:
    t = ChangePoint.__table__
    stmt = select(t).order_by(t.c.id)
    if confirmed is not None:
        stmt = stmt.where(t.c.confirmed.is_(confirmed))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


SERIES_COLUMNS = ("id", "run_id", "cell_id", "hardware_fingerprint", "setting_id", "arch",
                  "task", "metric", "unit", "value", "higher_is_better", "samples", "seed",
                  "n_samples", "status", "spread_kind", "created_at", "code_version", "extra")


def run_rows(engine: Engine, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Finished rows of these runs with the columns regression detection needs."""
    r = _results.c
    stmt = (select(*(r[c] for c in SERIES_COLUMNS))
            .where(r.run_id.in_(list(run_ids)), r.status.in_(DONE_STATUSES),
                   r.setting_id.is_not(None)).order_by(r.id))
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]


def series_history(engine: Engine, fingerprint: str, setting_id: str, metric: str, *,
                   before_id: int, exclude_runs: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Finished rows of one series stored before row ``before_id``, oldest first, from the
    series' newest confirmed change point on (its history restarts there)."""
    r = _results.c
    cp = ChangePoint.__table__.c
    conds = [r.hardware_fingerprint == fingerprint, r.setting_id == setting_id,
             r.metric == metric, r.status.in_(DONE_STATUSES), r.id < before_id]
    excluded = list(exclude_runs)
    if excluded:
        conds.append(r.run_id.not_in(excluded))
    with engine.connect() as conn:
        restart = conn.execute(
            select(cp.run_id, cp.confirm_run_id).where(
                cp.hardware_fingerprint == fingerprint, cp.setting_id == setting_id,
                cp.metric == metric, cp.confirmed.is_(True)).order_by(cp.id.desc()).limit(1)
        ).first()
        if restart is not None:
            first = conn.scalar(select(func.min(r.id)).where(
                r.run_id.in_([x for x in restart if x]), r.setting_id == setting_id,
                r.metric == metric))
            if first is not None:
                conds.append(r.id >= first)
        stmt = select(*(r[c] for c in SERIES_COLUMNS)).where(*conds).order_by(r.id)
        return [dict(row) for row in conn.execute(stmt).mappings()]
