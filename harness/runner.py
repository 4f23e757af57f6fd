"""Local runner: each cell in its own process with a timeout; outcomes stored as they finish.

Cells run in children of a warm server (:mod:`harness.zygote`) that imported torch once; each
child is its own process group with an address-space cap, killed as a group on timeout or
when the runner dies. Everything a cell produces is untrusted: its output is read as bytes and
decoded with replacement, its outcome file is validated before anything is stored, and a bad
outcome becomes that cell's ``failed`` row.

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

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

import tasks
from harness import db
from harness.catalog import architecture_entry, task_entry
from harness.plan import Cell
from harness.provenance import code_version
from harness.spawner import Exit, Spawner, sweep_scratch
from tasks.base import STATUSES
from tasks.instruments.hardware import fingerprint as hardware_fingerprint

log = logging.getLogger(__name__)

ERROR_TAIL = 4000
SWEEP_STOPPERS = ("timeout", "oom")  # a sweep stops a variant here: longer inputs cost more
LEASE_S = 60.0  # a claim not renewed for this long is taken over by another runner
CRASH_SIGNALS = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS", "SIGTRAP")
# exit-code policy of `archbench run` (README): statuses that are not failures
SUCCESS = ("ok", "unavailable", "unsupported")
MEMORY_SHARE = 0.8  # default cap: this share of the machine's RAM, divided among parallel cells


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


def cell_env(cell: Cell) -> dict[str, str]:
    """The parent's environment, threads pinned, plus what the task asks for."""
    env = {**os.environ, **tasks.get(cell.task).env}
    env.update(OMP_NUM_THREADS=str(cell.threads), MKL_NUM_THREADS=str(cell.threads))
    return env


def machine_memory() -> int | None:
    """Bytes of RAM (MemTotal), None where /proc/meminfo is absent."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_cap(limit: int | None, device: str, jobs: int) -> int | None:
    """The address-space cap of one cell: ``limit`` when given, else ``MEMORY_SHARE`` of the
    machine's RAM over ``jobs``; none on CUDA, where the driver maps far more address space
    than any RAM cap allows (there ``oom`` is the device's own out-of-memory error)."""
    if device.startswith("cuda"):
        return None
    if limit:
        return int(limit)
    total = machine_memory()
    return int(total * MEMORY_SHARE / max(1, jobs)) if total else None


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def interpret(ex: Exit, timeout_s: float, cap: int | None) -> dict[str, Any]:
    """The outcome a cell's process left, as a status that is a fact (module doc)."""
    tail = ex.log_tail[-ERROR_TAIL:]
    rss = f"; peak RSS {_fmt_bytes(ex.maxrss_kib * 1024)}" if ex.maxrss_kib else ""
    if ex.server_error:
        return {"status": "failed", "error": f"{ex.server_error}\n{tail}"}
    if ex.timed_out:
        return {"status": "timeout", "error": f"cell exceeded its {timeout_s:g} s timeout{rss}"}
    if ex.signal is None and ex.outcome is not None:
        return read_outcome(ex, cap)
    if ex.signal == "SIGKILL" and ex.oom_killed:
        return {"status": "oom", "error": "killed by the kernel's OOM killer (its oom_kill "
                f"counter rose while the cell ran){rss}\n{tail}"}
    if ex.signal in CRASH_SIGNALS:
        return {"status": "failed", "error": f"cell process crashed with {ex.signal}{rss}\n{tail}"}
    if ex.signal is not None:
        return {"status": "killed", "error": f"cell process was killed by {ex.signal} from "
                f"outside the harness{rss}\n{tail}"}
    return {"status": "failed", "error": f"cell process exited with {ex.returncode} without "
            f"an outcome{rss}\n{tail}"}


def read_outcome(ex: Exit, cap: int | None) -> dict[str, Any]:
    """The outcome file, validated: a malformed one is this cell's failure, never the run's."""
    try:
        raw = json.loads(ex.outcome.decode("utf-8", errors="replace"))
        outcome = validate_outcome(raw)
    except (ValueError, TypeError, KeyError) as err:
        return {"status": "failed", "error": f"cell wrote an unusable outcome: "
                f"{type(err).__name__}: {err}\n{ex.log_tail[-ERROR_TAIL:]}"}
    if outcome["status"] == "oom" and cap:
        outcome["error"] = (f"allocation failed under the cell's memory cap of "
                            f"{_fmt_bytes(cap)}\n{outcome.get('error') or ''}")
    tail = ex.log_tail.strip()
    if outcome["status"] != "ok" and tail:  # what the cell printed may say why
        outcome["error"] = f"{outcome.get('error') or ''}\ncell output (tail):\n{tail[-2000:]}"
    return outcome


_METRIC_FIELDS = {"name": str, "unit": str, "status": str, "method": str}


def validate_outcome(raw: Any) -> dict[str, Any]:
    """Check the shape of a cell's outcome; raise ValueError/TypeError naming what is wrong."""
    if not isinstance(raw, dict):
        raise TypeError(f"outcome is a {type(raw).__name__}, not an object")
    status = raw.get("status")
    if status not in STATUSES:
        raise ValueError(f"outcome status {status!r} not in {STATUSES}")
    out = {"status": status, "error": _text(raw.get("error")),
           "measure_s": _number(raw.get("measure_s"))}
    if isinstance(raw.get("peak"), dict):
        out["peak"] = raw["peak"]
    if status != "ok":
        return out
    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise ValueError("an ok outcome needs a non-empty list of metrics")
    clean = []
    for i, m in enumerate(metrics):
        if not isinstance(m, dict):
            raise TypeError(f"metric {i} is a {type(m).__name__}, not an object")
        for key, kind in _METRIC_FIELDS.items():
            if not isinstance(m.get(key), kind):
                raise TypeError(f"metric {i} field {key!r} is {m.get(key)!r}")
        if m["status"] not in STATUSES:
            raise ValueError(f"metric {m['name']!r} status {m['status']!r} not in {STATUSES}")
        value = _number(m.get("value"))
        metric = {**m, "value": value, "error": _text(m.get("error")),
                  "spread": _number(m.get("spread")),
                  "n_samples": int(m.get("n_samples") or 0),
                  "samples": m.get("samples") if isinstance(m.get("samples"), list) else None,
                  "summary": m.get("summary") if isinstance(m.get("summary"), dict) else None,
                  "extra": m.get("extra") if isinstance(m.get("extra"), dict) else {}}
        if metric["status"] == "ok" and value is None:
            metric.update(status="failed", error=f"non-finite or missing value "
                          f"{m.get('value')!r}")
        clean.append(metric)
    out["metrics"] = clean
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


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
        config: dict[str, Any] | None = None, nightly_id: str | None = None) -> RunReport:
    """Run every cell not yet done; callbacks let the CLI draw progress.

    ``rerun`` says what "done" means (:data:`RERUN`): ``changed`` skips cells with a finished
    result for their identity (which includes the variant's and task's source digests), so
    what changed is measured again and nothing else; ``none`` also skips a cell whose setting
    and seed were measured by any earlier version of the code; ``all`` measures every cell
    again (cells finished by another runner since this run started are still skipped).

    ``jobs > 1`` runs that many accuracy cells at once (their results count steps, not
    seconds); efficiency cells always run alone, after them, so no measurement shares the
    machine with another cell of this run. ``spawner``: one the caller started early (its
    servers import torch while the caller plans); closed here.
    """
    if jobs < 1:
        raise ValueError("jobs must be >= 1")

    device = cells[0].device if cells else "cpu"
    hw = hardware_fingerprint(device)
    version = code_version()
    spawner = spawner or Spawner(plugins)
    run_id = spawner.run_id
    owner = run_id  # claims are held by the run; its heartbeat keeps them
    started = db.now()
    db.ensure_hardware(engine, hw.fingerprint, hw.stable)
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
    stopped: dict[str, str] = {}  # sweep series -> why its larger values are not run
    cap = memory_cap(memory_limit, device, jobs)
    peaks_known = set(db.peaks(engine))
    peaks_asked: set[tuple[str, str, str, int]] = set()
    lock = threading.Lock()

    def attempt(cell: Cell, spawner: Spawner) -> dict[str, Any]:
        if cell.series in stopped:
            return {"status": "skipped", "error": stopped[cell.series], "wall_s": 0.0}
        spec = {**cell.identity(), "cell_id": cell.cell_id}
        key = (hw.fingerprint, cell.device, cell.dtype, cell.threads)
        with lock:
            if tasks.get(cell.task).needs_peak and key not in peaks_known | peaks_asked:
                spec["measure_peak"] = True
                peaks_asked.add(key)
        start = time.perf_counter()
        ex = spawner.run(spec, cell_env(cell), timeout_s, cap, tasks.get(cell.task).env)
        outcome = interpret(ex, timeout_s, cap)
        outcome["wall_s"] = time.perf_counter() - start  # the whole cell as the runner saw it
        if isinstance(outcome.get("peak"), dict):
            try:
                db.store_peak(engine, *key, outcome["peak"])
                peaks_known.add(key)
            except Exception as err:  # noqa: BLE001 - the cell's own rows still count
                log.warning("matmul peak not stored: %s", err)
        return outcome

    def finish(cell: Cell, outcome: dict[str, Any]) -> None:
        if cell.series and outcome["status"] in SWEEP_STOPPERS:
            stopped.setdefault(cell.series, f"not run: the same series hit "
                               f"{outcome['status']} at {cell.sweep_key}={cell.sweep_value}")
        volatile = {**hardware_fingerprint(device).volatile,
                    "cell_process": {"wall_s": outcome.get("wall_s"),
                                     "measure_s": outcome.get("measure_s")}}
        rows = to_rows(cell, outcome, run_id, hw.fingerprint, version, volatile,
                       headlines[cell.task])
        stored = db.store(engine, rows, claim=(cell.cell_id, hw.fingerprint, owner))
        if not stored:  # our lease was taken over: the other runner's result stands
            log.warning("%s: claim lost before storing; result discarded", cell.label)
            report.elsewhere += 1
            return
        head = next((r for r in rows if r["metric"] == headlines[cell.task]), rows[0])
        result = Outcome(cell, head["status"], outcome.get("wall_s") or 0.0, head["error"], rows)
        report.outcomes.append(result)
        if on_done:
            on_done(result)

    def claim(cell: Cell) -> bool:
        # a cell another runner tried and failed during this run is not retried here
        if db.claim(engine, cell.cell_id, hw.fingerprint, owner, lease_s,
                    done_since=started if rerun == "all" else None,
                    skip_failed_since=started):
            return True
        report.elsewhere += 1
        return False

    together = [c for c in pending if jobs > 1 and tasks.get(c.task).kind == "accuracy"]
    alone = [c for c in pending if c not in together]
    beat = _Heartbeat(engine, owner, lease_s)
    beat.start()
    status = "finished"
    try:
        with spawner:
            if pending:
                spawner.warm(tasks.get(pending[0].task).env)  # no-op if already started
            if together:
                _run_parallel(together, jobs, lambda c: attempt(c, spawner), finish, on_start,
                              claim)
            for cell in alone:
                if not claim(cell):
                    continue
                if on_start:
                    on_start(cell)
                finish(cell, attempt(cell, spawner))
    except KeyboardInterrupt:
        report.interrupted = True
        status = "interrupted"
    finally:
        beat.stopped.set()
        db.finish_run(engine, run_id, status)
    return report


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


def _run_parallel(cells: list[Cell], jobs: int, attempt: Callable[[Cell], dict[str, Any]],
                  finish: Callable[[Cell, dict[str, Any]], None],
                  on_start: Callable[[Cell], None] | None,
                  claim: Callable[[Cell], bool]) -> None:
    """``jobs`` cell processes at a time; outcomes are stored by this (the calling) thread."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    queue = list(reversed(cells))
    running: dict[Future, Cell] = {}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="archbench-cell")
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop()
                if not claim(cell):
                    continue
                if on_start:
                    on_start(cell)
                running[pool.submit(attempt, cell)] = cell
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(running.pop(future), future.result())
    finally:
        pool.shutdown(wait=not running, cancel_futures=True)
