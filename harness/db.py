"""SQL storage (SQLAlchemy 2.x): SQLite by default, PostgreSQL with only a different URL.

Tables: ``runs`` (one per ``archbench run``), ``hardware`` (fingerprint -> stable facts),
``results`` (one row per metric of a cell, with its provenance), ``schema_migrations``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime, timezone
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
    create_engine,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

SCHEMA_VERSION = 1
DEFAULT_DB = Path("results") / "archbench.db"
DONE_STATUSES = ("ok", "unavailable", "unsupported")  # finished measurements; not re-run


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
    status: Mapped[str] = mapped_column(String(20), default="running")
    n_cells: Mapped[int] = mapped_column(Integer, default=0)


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
    """Engine with the schema created and its migration recorded."""
    engine = create_engine(resolve_url(url), future=True)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        if s.get(Migration, SCHEMA_VERSION) is None:
            s.add(Migration(version=SCHEMA_VERSION))
    return engine


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def ensure_hardware(engine: Engine, fingerprint: str, stable: dict[str, Any]) -> None:
    with Session(engine) as s, s.begin():
        if s.get(HardwareRow, fingerprint) is None:
            s.add(HardwareRow(fingerprint=fingerprint, stable=stable))


def start_run(engine: Engine, run_id: str, suite: str, code_version: str, fingerprint: str,
              n_cells: int) -> None:
    with Session(engine) as s, s.begin():
        s.add(Run(run_id=run_id, suite=suite, code_version=code_version,
                  hardware_fingerprint=fingerprint, n_cells=n_cells))


def finish_run(engine: Engine, run_id: str, status: str) -> None:
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        if run is not None:
            run.status = status
            run.finished_at = now()


def done_cells(engine: Engine, fingerprint: str, code_version: str) -> set[str]:
    """Cells with a finished measurement for this hardware and code version."""
    stmt = select(Result.cell_id).where(
        Result.hardware_fingerprint == fingerprint, Result.code_version == code_version,
        Result.status.in_(DONE_STATUSES),
    ).distinct()
    with Session(engine) as s:
        return set(s.scalars(stmt))


def store(engine: Engine, rows: Iterable[dict[str, Any]]) -> int:
    """Insert one cell's rows in a single transaction (all or nothing)."""
    rows = list(rows)
    with Session(engine) as s, s.begin():
        s.add_all(Result(**row) for row in rows)
    return len(rows)


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
    rows = list(rows)
    with Session(engine) as s, s.begin():
        s.query(Derived).filter(Derived.hardware_fingerprint == fingerprint).delete()
        s.add_all(Derived(hardware_fingerprint=fingerprint, **row) for row in rows)
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
    with Session(engine) as s, s.begin():
        s.merge(Peak(hardware_fingerprint=fingerprint, device=device, dtype=dtype,
                     threads=threads, **reading))
