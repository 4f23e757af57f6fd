"""Local runner: each cell in its own subprocess with a timeout; outcomes stored as they finish.

Resuming is by content: cells that already have a finished result for this hardware
fingerprint and code version are skipped, so a killed run picks up where it stopped and no
finished cell is measured twice. Each cell's rows are written in one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from harness import db
from harness.hardware import fingerprint as hardware_fingerprint
from harness.plan import Cell
from harness.provenance import code_version

log = logging.getLogger(__name__)

STDERR_TAIL = 4000
SWEEP_STOPPERS = ("timeout", "oom")  # a sweep stops a variant here: longer inputs cost more


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

    @property
    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        return counts


def cell_env(cell: Cell) -> dict[str, str]:
    """The parent's environment, threads pinned, plus what the task asks for."""
    import tasks

    env = {**os.environ, **tasks.get(cell.task).env}
    env.update(OMP_NUM_THREADS=str(cell.threads), MKL_NUM_THREADS=str(cell.threads))
    return env


def execute(cell: Cell, timeout_s: float, plugins: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``cell`` in a fresh Python process; always returns an outcome dict."""
    start = time.perf_counter()
    outcome = _execute(cell, timeout_s, plugins)
    outcome["wall_s"] = time.perf_counter() - start  # whole process, start-up included
    return outcome


def _execute(cell: Cell, timeout_s: float, plugins: tuple[str, ...]) -> dict[str, Any]:
    spec = {**cell.identity(), "cell_id": cell.cell_id, "plugins": list(plugins)}
    with tempfile.TemporaryDirectory(prefix="archbench-cell-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "harness.cell", str(spec_path), str(out_path)]
        try:
            proc = subprocess.run(cmd, env=cell_env(cell), capture_output=True,
                                  text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "error": f"cell exceeded its {timeout_s:g} s timeout"}
        if out_path.is_file():
            return json.loads(out_path.read_text())
    tail = (proc.stderr or "")[-STDERR_TAIL:]
    if proc.returncode == -signal.SIGKILL:
        return {"status": "oom", "error": "cell process was killed (SIGKILL), most likely by "
                "the kernel's out-of-memory killer\n" + tail}
    return {"status": "failed", "error": f"cell process exited with {proc.returncode}\n{tail}"}


def to_rows(cell: Cell, outcome: dict[str, Any], run_id: str, fp: str, version: str,
            volatile: dict[str, Any], headline: str) -> list[dict[str, Any]]:
    """Result rows with provenance; a failed cell yields one row for the task's headline."""
    base = {
        "run_id": run_id, "cell_id": cell.cell_id, "config_hash": cell.config_hash,
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


def measure_peak(engine: Engine, fingerprint: str, cell: Cell) -> None:
    """Measure this setting's matmul peak once (in its own process) for achieved FLOP/s."""
    key = (fingerprint, cell.device, cell.dtype, cell.threads)
    if key in db.peaks(engine):
        return
    cmd = [sys.executable, "-m", "harness.peak", cell.device, cell.dtype, str(cell.threads)]
    try:
        proc = subprocess.run(cmd, env=cell_env(cell), capture_output=True, text=True,
                              timeout=120, check=True)
        db.store_peak(engine, *key, json.loads(proc.stdout))
    except (subprocess.SubprocessError, ValueError) as err:
        log.warning("matmul peak not measured (achieved FLOP/s will be missing): %s", err)


def run(cells: list[Cell], engine: Engine, *, suite_name: str, timeout_s: float,
        plugins: tuple[str, ...] = (), headlines: dict[str, str],
        on_start: Callable[[Cell], None] | None = None,
        on_done: Callable[[Outcome], None] | None = None,
        on_plan: Callable[[int, int], None] | None = None, jobs: int = 1) -> RunReport:
    """Run every cell not yet done; callbacks let the CLI draw progress.

    ``jobs > 1`` runs that many accuracy cells at once (their results count steps, not
    seconds); efficiency cells always run alone, after them, so no measurement shares the
    machine with another cell.
    """
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    device = cells[0].device if cells else "cpu"
    hw = hardware_fingerprint(device)
    version = code_version()
    done = db.done_cells(engine, hw.fingerprint, version)
    pending = [c for c in cells if c.cell_id not in done]
    run_id = uuid.uuid4().hex[:16]
    db.ensure_hardware(engine, hw.fingerprint, hw.stable)
    db.start_run(engine, run_id, suite_name, version, hw.fingerprint, len(cells))
    if any(c.task == "flops" for c in pending):
        measure_peak(engine, hw.fingerprint, pending[0])
    if on_plan:
        on_plan(len(cells), len(pending))
    report = RunReport(run_id, version, hw.fingerprint, len(cells) - len(pending), [])
    stopped: dict[str, str] = {}  # sweep series -> why its larger values are not run

    def attempt(cell: Cell) -> dict[str, Any]:
        if cell.series in stopped:
            return {"status": "skipped", "error": stopped[cell.series], "wall_s": 0.0}
        return execute(cell, timeout_s, plugins)

    def finish(cell: Cell, outcome: dict[str, Any]) -> None:
        if cell.series and outcome["status"] in SWEEP_STOPPERS:
            stopped.setdefault(cell.series, f"not run: the same series hit "
                               f"{outcome['status']} at {cell.sweep_key}={cell.sweep_value}")
        volatile = hardware_fingerprint(device).volatile
        rows = to_rows(cell, outcome, run_id, hw.fingerprint, version, volatile,
                       headlines[cell.task])
        db.store(engine, rows)
        head = next((r for r in rows if r["metric"] == headlines[cell.task]), rows[0])
        result = Outcome(cell, head["status"], outcome.get("wall_s") or 0.0, head["error"], rows)
        report.outcomes.append(result)
        if on_done:
            on_done(result)

    import tasks

    together = [c for c in pending if jobs > 1 and tasks.get(c.task).kind == "accuracy"]
    alone = [c for c in pending if c not in together]
    try:
        if together:
            _run_parallel(together, jobs, attempt, finish, on_start)
        for cell in alone:
            if on_start:
                on_start(cell)
            finish(cell, attempt(cell))
    except KeyboardInterrupt:
        report.interrupted = True
        db.finish_run(engine, run_id, "interrupted")
        return report
    db.finish_run(engine, run_id, "finished")
    return report


def _run_parallel(cells: list[Cell], jobs: int, attempt: Callable[[Cell], dict[str, Any]],
                  finish: Callable[[Cell, dict[str, Any]], None],
                  on_start: Callable[[Cell], None] | None) -> None:
    """``jobs`` cell processes at a time; outcomes are stored by this (the calling) thread."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    queue = list(reversed(cells))
    running: dict[Future, Cell] = {}
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="archbench-cell")
    try:
        while queue or running:
            while queue and len(running) < jobs:
                cell = queue.pop()
                if on_start:
                    on_start(cell)
                running[pool.submit(attempt, cell)] = cell
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                finish(running.pop(future), future.result())
    finally:
        pool.shutdown(wait=not running, cancel_futures=True)
