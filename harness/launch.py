"""Launch one cell in its isolated process and read what it left: the same code on the runner's
machine (the local executor) and on a Ray worker node (:mod:`harness.ray_executor`).

:func:`execute` runs a cell through a :class:`~harness.spawner.Spawner` (own process group,
timeout, address-space cap) and turns its exit into an outcome whose status is a fact
(:func:`interpret`); the outcome also carries the wall time and the volatile hardware state of
the machine that ran it.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from harness.spawner import Exit, Spawner
from tasks.base import STATUSES
from tasks.instruments.hardware import fingerprint as hardware_fingerprint

ERROR_TAIL = 4000
CRASH_SIGNALS = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS", "SIGTRAP")
MEMORY_SHARE = 0.8  # default cap: this share of the machine's RAM, divided among parallel cells


def execute(spawner: Spawner, spec: dict[str, Any], env: dict[str, str], timeout_s: float,
            cap: int | None, start_env: dict[str, str], device: str) -> dict[str, Any]:
    """Run one cell to its end; the outcome as :func:`interpret` reads it, with ``wall_s`` (the
    whole cell as its launcher saw it) and ``volatile`` (this machine's state afterwards)."""
    start = time.perf_counter()
    ex = spawner.run(spec, env, timeout_s, cap, start_env)
    outcome = interpret(ex, timeout_s, cap)
    outcome["wall_s"] = time.perf_counter() - start
    outcome["volatile"] = hardware_fingerprint(device).volatile
    return outcome


def cell_env(task_env: dict[str, str], threads: int,
             extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment (the runner's, or a Ray worker's), plus ``extra`` (what the
    driver forwards), what the task asks for, and its threads pinned."""
    env = {**os.environ, **(extra or {}), **task_env}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
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
