"""The runner: each cell in its own process with a timeout; outcomes stored as they finish.

Cells are launched by an executor (:mod:`harness.executors`: on this machine, or as Ray tasks
on a cluster), in children of a warm server (:mod:`harness.zygote`) that imported torch once;
each child is its own process group with an address-space cap, killed as a group on timeout
or when its launcher dies (:mod:`harness.launch`). Everything a cell produces is untrusted:
its output is read as bytes and decoded with replacement, its outcome file is validated before
anything is stored, and a bad outcome becomes that cell's ``failed`` row.

**Claims, not guesses.** Before a cell runs it is claimed in the database (a lease with owner
and heartbeat; :func:`harness.db.claim`), and its rows are stored only while the claim is
held, so any number of runners on one database measure each cell exactly once. A run that
stopped heartbeating is ``abandoned`` and its claims are taken over; resuming is by content:
a cell's id includes its variant's and task's source digests (:mod:`harness.sources`), and
cells with a finished result for their id on this machine are not run (``--rerun``).

**Statuses are facts.** ``timeout``: the runner killed the cell at its limit. ``oom``: an
allocation failed under the cell's memory cap, or the kernel's OOM counter rose while a cell
died of SIGKILL. ``killed``: a signal from outside (its name is recorded). ``diverged``: the
training loss went non-finite or exploded. ``failed``: anything else, with the error.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

import tasks
from harness import db
from harness.catalog import architecture_entry, task_entry
from harness.executors import Executor, LocalExecutor
from harness.plan import Cell
from harness.provenance import code_version
from harness.spawner import Spawner, sweep_scratch

log = logging.getLogger(__name__)

SWEEP_STOPPERS = ("timeout", "oom")  # a sweep stops a variant here: longer inputs cost more
LEASE_S = 60.0  # a claim not renewed for this long is taken over by another runner
# exit-code policy of `archbench run` (README): statuses that are not failures
SUCCESS = ("ok", "unavailable", "unsupported")


@dataclass
class Outcome:
    cell: Cell
    status: str
    wall_s: float
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunReport:
    run_id: str
    code_version: str
    fingerprint: str
    skipped: int
    outcomes: list[Outcome]
    interrupted: bool = False
    elsewhere: int = 0  # cells another runner held or finished meanwhile
    abandoned_runs: int = 0  # earlier runs found dead at start and closed as abandoned

    @property
    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    @property
    def failures(self) -> list[Outcome]:
        """Cells that did not finish as a measurement (``SUCCESS``); a sweep's skipped cells
        follow a failure already counted."""
        return [o for o in self.outcomes if o.status not in SUCCESS and o.status != "skipped"]


def to_rows(cell: Cell, outcome: dict[str, Any], run_id: str, fp: str, version: str,
            volatile: dict[str, Any], headline: str) -> list[dict[str, Any]]:
    """Result rows with provenance; a failed cell yields one row for the task's headline."""
    base = {
        "run_id": run_id, "cell_id": cell.cell_id, "config_hash": cell.config_hash,
        "setting_id": cell.setting_id, "arch_digest": cell.arch_digest,
        "task_digest": cell.task_digest,
        "code_version": version, "hardware_fingerprint": fp, "arch": cell.arch,
        "arch_version": cell.arch_version, "arch_config": cell.arch_config, "task": cell.task,
        "task_version": cell.task_version, "task_config": cell.task_config, "seed": cell.seed,
        "device": cell.device, "dtype": cell.dtype, "threads": cell.threads,
        "volatile": volatile, "wall_s": outcome.get("wall_s"),
    }
    if outcome["status"] != "ok":
        return [{**base, "metric": headline, "unit": "", "value": None, "n_samples": 0,
                 "status": outcome["status"], "error": outcome.get("error"), "method": "",
                 "higher_is_better": None}]
    rows = []
    for m in outcome["metrics"]:
        summary = m.get("summary") or {}
        extra = m.get("extra") or {}
        rows.append({
            **base, "metric": m["name"], "unit": m["unit"], "value": m["value"],
            "higher_is_better": m["higher_is_better"], "spread": m["spread"],
            "spread_kind": m["spread_kind"], "ci_low": summary.get("ci_low"),
            "ci_high": summary.get("ci_high"), "p90": summary.get("p90"),
            "p99": summary.get("p99"), "n_samples": m["n_samples"], "status": m["status"],
            "error": m["error"], "method": m["method"], "kernel_path": extra.get("kernel_path"),
            "samples": m["samples"], "summary": summary or None, "extra": extra,
        })
    return rows


class _Heartbeat(threading.Thread):
    """Renews this run's claims every third of the lease until stopped."""

    def __init__(self, engine: Engine, owner: str, lease_s: float) -> None:
        super().__init__(daemon=True, name="archbench-heartbeat")
        self.engine, self.owner, self.lease_s = engine, owner, lease_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            try:
                db.heartbeat(self.engine, self.owner, self.lease_s)
            except Exception as err:  # noqa: BLE001 - a missed beat is retried; leases are long
                log.warning("heartbeat failed: %s", err)


def run(cells: list[Cell], engine: Engine, *, suite_name: str, timeout_s: float,
        plugins: tuple[str, ...] = (), headlines: dict[str, str],
        on_start: Callable[[Cell], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None, jobs: int = 1,
        memory_limit: int | None = None, lease_s: float = LEASE_S,
        spawner: Spawner | None = None, rerun: str = "changed", kind: str = "run",
        config: dict[str, Any] | None = None, nightly_id: str | None = None,
        executor: Executor | None = None) -> RunReport:
    """Run every cell not yet done; callbacks let the CLI draw progress.

    ``rerun`` says what "done" means (:data:`RERUN`): ``changed`` skips cells with a finished
    result for their identity (which includes the variant's and task's source digests), so
    what changed is measured again and nothing else; ``none`` also skips a cell whose setting
    and seed were measured by any earlier version of the code; ``all`` measures every cell
    again (cells finished by another runner since this run started are still skipped).

    ``executor`` launches the cells (:mod:`harness.executors`); by default a local one with
    ``jobs``, ``memory_limit`` and ``spawner`` (one the caller started early, so its servers
    import torch while the caller plans; closed here): ``jobs > 1`` runs that many accuracy
    cells at once (their results count steps, not seconds); efficiency cells always run alone,
    after them, so no measurement shares the machine with another cell of this run. An
    executor passed in is ended, not closed, here.
    """
    executor = executor or LocalExecutor(plugins, jobs=jobs, memory_limit=memory_limit,
                                         spawner=spawner)
    executor.check(cells)  # bad input (no GPU on the cluster...) before any work
    device = cells[0].device if cells else "cpu"
    hw = executor.hardware(device)  # the machine the cells run on: their rows carry it
    version = code_version()
    db.ensure_hardware(engine, hw.fingerprint, hw.stable)
    run_id = executor.begin()
    owner = run_id  # claims are held by the run; its heartbeat keeps them
    started = db.now()
    # runners on this machine that died (their scratch folder outlived them) at once; any
    # other runner once its lease has run out
    abandoned = db.abandon_runs(engine, sweep_scratch()) + db.abandon_stale_runs(engine, lease_s)
    pending = pending_cells(engine, cells, hw.fingerprint, rerun)
    db.start_run(engine, run_id, suite_name, version, hw.fingerprint, len(cells), kind=kind,
                 config=config, rerun=rerun, nightly_id=nightly_id)
    db.store_catalog(engine, *catalog_entries(cells))
    if on_plan:
        on_plan(len(cells), len(pending))
    report = RunReport(run_id, version, hw.fingerprint, len(cells) - len(pending), [],
                       abandoned_runs=abandoned)
    cell_run = _CellRun(engine, executor, report, hw.fingerprint, owner, timeout_s, headlines,
                        lease_s, started if rerun == "all" else None, started, on_done)
    beat = _Heartbeat(engine, owner, lease_s)
    beat.start()
    status = "finished"
    try:
        for group, width in executor.groups(pending):
            _run_group(group, width, cell_run, on_start)
    except KeyboardInterrupt:
        report.interrupted = True
        status = "interrupted"
    finally:
        beat.stopped.set()
        executor.end()
        db.finish_run(engine, run_id, status)
    return report


class _CellRun:
    """One run's steps for one cell: claim it, launch it, store what it left."""

    def __init__(self, engine: Engine, executor: Executor, report: RunReport, fp: str,
                 owner: str, timeout_s: float, headlines: dict[str, str], lease_s: float,
                 done_since: Any, started: Any, on_done: Callable[[Outcome], None] | None):
        self.engine, self.executor, self.report, self.fp = engine, executor, report, fp
        self.owner, self.timeout_s, self.headlines = owner, timeout_s, headlines
        self.lease_s, self.done_since, self.started, self.on_done = (lease_s, done_since,
                                                                     started, on_done)
        self.stopped: dict[str, str] = {}  # sweep series -> why its larger values are not run
        self.peaks_known = set(db.peaks(engine))
        self.lock = threading.Lock()

    def claim(self, cell: Cell) -> bool:
        # a cell another runner tried and failed during this run is not retried here
        if db.claim(self.engine, cell.cell_id, self.fp, self.owner, self.lease_s,
                    done_since=self.done_since, skip_failed_since=self.started):
            return True
        self.report.elsewhere += 1
        return False

    def submit(self, cell: Cell) -> Future:
        if cell.series in self.stopped:
            done: Future = Future()
            done.set_result({"status": "skipped", "error": self.stopped[cell.series],
                             "wall_s": 0.0})
            return done
        spec = {**cell.identity(), "cell_id": cell.cell_id}
        key = (self.fp, cell.device, cell.dtype, cell.threads)
        with self.lock:
            if tasks.get(cell.task).needs_peak and key not in self.peaks_known:
                spec["measure_peak"] = True
                self.peaks_known.add(key)  # asked once; stored when the cell reports it
        return self.executor.submit(cell, spec, self.timeout_s)

    def finish(self, cell: Cell, outcome: dict[str, Any]) -> None:
        if isinstance(outcome.get("peak"), dict):
            try:
                db.store_peak(self.engine, self.fp, cell.device, cell.dtype, cell.threads,
                              outcome["peak"])
            except Exception as err:  # noqa: BLE001 - the cell's own rows still count
                log.warning("matmul peak not stored: %s", err)
        if cell.series and outcome["status"] in SWEEP_STOPPERS:
            self.stopped.setdefault(cell.series, f"not run: the same series hit "
                                    f"{outcome['status']} at {cell.sweep_key}={cell.sweep_value}")
        volatile = {**(outcome.get("volatile") or {}),
                    "cell_process": {"wall_s": outcome.get("wall_s"),
                                     "measure_s": outcome.get("measure_s")}}
        rows = to_rows(cell, outcome, self.report.run_id, self.fp, self.report.code_version,
                       volatile, self.headlines[cell.task])
        stored = db.store(self.engine, rows, claim=(cell.cell_id, self.fp, self.owner))
        if not stored:  # our lease was taken over: the other runner's result stands
            log.warning("%s: claim lost before storing; result discarded", cell.label)
            self.report.elsewhere += 1
            return
        head = next((r for r in rows if r["metric"] == self.headlines[cell.task]), rows[0])
        result = Outcome(cell, head["status"], outcome.get("wall_s") or 0.0, head["error"], rows)
        self.report.outcomes.append(result)
        if self.on_done:
            self.on_done(result)


RERUN = ("changed", "none", "all")


def pending_cells(engine: Engine, cells: list[Cell], fingerprint: str,
                  rerun: str = "changed") -> list[Cell]:
    """The cells a run with this ``rerun`` policy measures (see :func:`run`)."""
    if rerun not in RERUN:
        raise ValueError(f"--rerun: allowed: {', '.join(RERUN)}; got {rerun!r}")
    if rerun == "all":
        return list(cells)
    done = db.done_cells(engine, fingerprint)
    pending = [c for c in cells if c.cell_id not in done]
    if rerun == "none":
        seen = db.done_settings(engine, fingerprint)
        pending = [c for c in pending if (c.setting_id, c.seed) not in seen]
    return pending


def catalog_entries(cells: list[Cell]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The variants and tasks of these cells as stored metadata (with their digests)."""
    variants = {c.arch: {**architecture_entry(c.arch), "digest": c.arch_digest} for c in cells}
    tasks_ = {c.task: {**task_entry(c.task), "digest": c.task_digest} for c in cells}
    return list(variants.values()), list(tasks_.values())


def _run_group(cells: list[Cell], width: int, cell_run: _CellRun,
               on_start: Callable[[Cell], None] | None) -> None:
    """``width`` cells at a time; outcomes are stored by this (the calling) thread, in the
    order they finish."""
    queue = list(reversed(cells))
    running: dict[Future, Cell] = {}
    while queue or running:
        while queue and len(running) < width:
            cell = queue.pop()
            if not cell_run.claim(cell):
                continue
            if on_start:
                on_start(cell)
            running[cell_run.submit(cell)] = cell
        if not running:
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            cell_run.finish(running.pop(future), future.result())
