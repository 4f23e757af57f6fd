"""archbench's Python API: every step the CLI offers, callable from a notebook or a scheduler.

    import harness
    summary = harness.run_suite("quick", db_url="results/archbench.db")
    harness.build_site("site-out", db_url="results/archbench.db")

The CLI (:mod:`harness.cli`) only parses arguments, calls these and prints what they return.
Bad input raises the same one-line errors the CLI turns into exit 2 (``SuiteError``,
``ConfigError``, ``DbUrlError``...). ``db_url`` is a URL or SQLite path; None means
``$ARCHBENCH_DB``, else ``results/archbench.db`` (:func:`harness.dburl.resolve`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tasks
from harness import (
    claims,
    compare,
    db,
    dburl,
    derive,
    doctor,
    executors,
    export,
    nightly,
    outputs,
    plan,
    plugins,
    ray_executor,
    render,
    runner,
    suite,
)
from harness.merge import merge as _merge
from harness.plan import Cell
from harness.runner import RunReport
from harness.spawner import Spawner
from tasks.instruments.hardware import fingerprint

CHECKPOINT_ENV = "ARCHBENCH_CHECKPOINTS"  # the cell processes inherit it (harness.cell)


@dataclass
class Planned:
    """What a run of the suite would do: every cell, the ones still to measure, the plan's
    warnings, and an ETA in seconds (``known`` of the estimates come from earlier runs)."""

    cells: list[Cell]
    todo: list[Cell]
    warnings: list[str]
    eta_s: float
    known: int


@dataclass
class RunSummary:
    """A finished (or interrupted) run: the runner's report and how many derived figures the
    database now holds for the machines it touched."""

    report: RunReport
    cells: list[Cell]
    warnings: list[str]
    derived: int
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def make_executor(name: str = "local", *, address: str | None = None,
                  plugins: tuple[str, ...] = (), jobs: int = 1, memory_limit: int | None = None,
                  spawner: Spawner | None = None) -> executors.Executor:
    """The executor ``name`` (``executors.EXECUTORS``); bad input raises ``ExecutorError``."""
    if name not in executors.EXECUTORS:
        raise executors.ExecutorError(f"--executor: allowed: {', '.join(executors.EXECUTORS)}; "
                                      f"got {name!r}")
    if name == "local":
        if address:
            raise executors.ExecutorError("--address: only with --executor ray")
        return executors.LocalExecutor(plugins, jobs=jobs, memory_limit=memory_limit,
                                       spawner=spawner)
    return ray_executor.RayExecutor(plugins, address=address, memory_limit=memory_limit)


def load_plugins(paths: Sequence[str | Path] = ()) -> tuple[str, ...]:
    """Installed plugins (entry points) first, then ``paths``; returns them resolved."""
    plugins.load_entry_points()
    resolved = tuple(str(Path(p).resolve()) for p in paths)
    for path in resolved:
        plugins.load(path)
    return resolved


def plan_suite(suite_ref: str, *, db_url: str | None = None, device: str | None = None,
               dtype: str | None = None, threads: int | None = None, jobs: int = 1,
               rerun: str = "changed") -> Planned:
    """The cells a run would measure (a plan never creates a database)."""
    url = dburl.resolve(db_url)
    s = suite.load(suite_ref, device=device, dtype=dtype, threads=threads)
    cells = plan.plan(s)
    existing = not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).is_file()
    engine = db.connect(url) if existing else None
    history = db.wall_times(engine) if engine is not None else {}
    todo = cells
    if engine is not None and cells:  # what `run` would measure with this rerun
        todo = runner.pending_cells(engine, cells, fingerprint(cells[0].device).fingerprint,
                                    rerun)
    accuracy = [c for c in todo if tasks.get(c.task).kind == "accuracy"]
    rest = [c for c in todo if tasks.get(c.task).kind != "accuracy"]
    acc_s, known_a = plan.estimate(accuracy, history)
    rest_s, known_r = plan.estimate(rest, history)
    return Planned(cells, todo, plan.warnings(cells), acc_s / jobs + rest_s, known_a + known_r)


def run_suite(suite_ref: str, *, db_url: str | None = None, device: str | None = None,
              dtype: str | None = None, threads: int | None = None,
              timeout_s: float | None = None, jobs: int = 1, memory_limit: int | None = None,
              rerun: str = "changed", plugin_paths: Sequence[str | Path] = (),
              checkpoints: str | Path | None = None,
              on_plan: Callable[[int, int], None] | None = None,
              on_start: Callable[[Cell], None] | None = None,
              on_done: Callable[[Any], None] | None = None,
              on_warnings: Callable[[list[str]], None] | None = None,
              executor: str = "local", address: str | None = None) -> RunSummary:
    """Run a suite into the database (re-running resumes), then refresh the derived figures.

    Each cell runs in its own isolated process; a failing cell is stored with its status and
    the run goes on. The callbacks report progress (``harness.progress.Progress`` has them).
    ``executor``: ``local`` (this machine, ``jobs`` accuracy cells at once) or ``ray`` (Ray
    tasks on the cluster at ``address``, ``auto`` for the one on this machine, or a private
    one on 127.0.0.1 when None; :mod:`harness.executors`)."""
    url = dburl.resolve(db_url)
    resolved = load_plugins(plugin_paths)
    # a local cell server imports torch while the suite is planned
    spawner = Spawner(resolved) if executor == "local" else None
    ex = make_executor(executor, address=address, plugins=resolved, jobs=jobs,
                        memory_limit=memory_limit, spawner=spawner)
    try:
        if spawner is not None:
            spawner.warm()
        s = suite.load(suite_ref, device=device, dtype=dtype, threads=threads)
        cells = plan.plan(s)
        warnings = plan.warnings(cells)
        if on_warnings is not None:
            on_warnings(warnings)
        if checkpoints:
            os.environ[CHECKPOINT_ENV] = str(Path(checkpoints).resolve())
        engine = db.connect(url)
        report = runner.run(
            cells, engine, suite_name=s.name, timeout_s=timeout_s or s.timeout_s,
            plugins=resolved, headlines={name: tasks.get(name).headline for name in s.tasks},
            on_plan=on_plan, on_start=on_start, on_done=on_done, jobs=jobs,
            memory_limit=memory_limit or getattr(s, "memory_limit", None),
            rerun=rerun, config=suite.as_record(s), executor=_with_limit(ex, memory_limit, s))
    finally:
        ex.close()
        if spawner is not None:
            spawner.close()
    derived = derive.refresh(engine, report.code_version, run_id=report.run_id)
    return RunSummary(report, cells, warnings, derived, url)


def _with_limit(ex: executors.Executor, flag: int | None, s: Any) -> executors.Executor:
    """The executor with the cell memory cap: the flag, else the suite's ``memory_limit``."""
    ex.memory_limit = flag or getattr(s, "memory_limit", None)
    return ex


def build_site(out: str | Path, *, db_url: str | None = None) -> Path:
    """Render the static leaderboard from the database alone; returns the index page."""
    url = dburl.resolve(db_url)
    outputs.check_site_out(Path(out), outputs.database_path_of(url))  # before any work
    return render.build(db.connect(url), Path(out))


def export_results(out: str | Path, fmt: str, *, db_url: str | None = None,
                   **filters: Any) -> int:
    """Write results as csv, parquet, jsonl, sqlite or sql; returns the rows written.
    ``filters``: suite, task, arch, status, since (see ``archbench export --help``)."""
    url = dburl.resolve(db_url)
    outputs.check_file_out(Path(out), outputs.database_path_of(url))  # before any work
    return export.export(db.connect(url), Path(out), fmt, **filters)


def merge_databases(sources: Sequence[str], into: str) -> dict[str, int]:
    """Copy every result of ``sources`` into ``into`` (already present ones skipped)."""
    return _merge([dburl.resolve(s) for s in sources], dburl.resolve(into))


def upgrade_db(db_url: str | None = None) -> tuple[int | None, int]:
    """Bring the schema to this version with the migrations: (before, after)."""
    return db.upgrade(dburl.resolve(db_url))


def run_nightly(config: str | Path, *, db_url: str | None = None,
                plugin_paths: Sequence[str | Path] = (), executor: str = "local",
                address: str | None = None) -> nightly.NightlyReport:
    """The nightly suites, regression detection and site, as ``archbench nightly``;
    ``executor`` and ``address`` as for :func:`run_suite`."""
    cfg = nightly.load_config(config)  # a bad config fails before any work
    resolved = load_plugins(plugin_paths)
    url = dburl.resolve(db_url)
    ex = None if executor == "local" else make_executor(executor, address=address,
                                                         plugins=resolved)
    if ex is None and address:
        raise executors.ExecutorError("--address: only with --executor ray")
    try:
        return nightly.run_nightly(cfg, url, resolved, executor=ex)
    finally:
        if ex is not None:
            ex.close()


def compare_runs(a: str, b: str, *, db_url: str | None = None,
                 task_names: Sequence[str] | None = None,
                 metrics: Sequence[str] | None = None) -> dict[str, Any]:
    """Two runs, code versions or databases, side by side."""
    return compare.compare(dburl.resolve(db_url), a, b, tasks=task_names, metrics=metrics)


def check_claims(*, db_url: str | None = None,
                 file: str | Path | None = None) -> list[claims.Verdict]:
    """The seed-paper claims: reproduced, not reproduced or not run, with evidence."""
    found = claims.load(Path(file) if file else None)
    return claims.evaluate(db.connect(dburl.resolve(db_url)), found)


def machine_report(db_url: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """What meters, devices, threads and database this machine has."""
    return doctor.report(db_url)


__all__ = ["Planned", "RunSummary", "build_site", "check_claims", "compare_runs",
           "export_results", "load_plugins", "machine_report", "merge_databases", "plan_suite",
           "run_nightly", "run_suite", "upgrade_db"]
