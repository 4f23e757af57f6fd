"""``archbench nightly``: one scheduled run that measures, compares with history and reports.

Steps, under one lock per database (PostgreSQL: a session advisory lock; SQLite: an
exclusive ``flock`` on ``<database>.nightly.lock``, released by the kernel if the process
dies):

1. run each suite of the config (``rerun: all`` re-measures every cell, which regression
   tracking needs; ``changed`` only what changed), all runs tagged with the nightly's id;
2. compare every finished series (machine x setting x metric) of those runs with its history
   (:func:`harness.regress.compare`; the history restarts at the series' newest confirmed
   change point);
3. re-measure the cells of suspected changes in a ``confirm`` run and compare again with the
   same history; a change both runs show is confirmed (:func:`harness.regress.confirm`),
   unless either measurement was flagged ``contended`` (other processes used the CPU while it
   was timed): load, not code, may explain it, so it is reported unconfirmed;
4. store change points, write the report (Markdown and JSON) and publish the site.

Exit policy (also in the README): 0 clean; 1 a confirmed regression (improvements and
unconfirmed suspicions are reported, not failed); 2 an error: bad config, the lock held by
another nightly, a database problem, or a cell that did not finish (failed, timeout, oom,
...). An error wins over a regression.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

import tasks
from harness import db, derive, plan, regress, render, runner, suite, yamlsafe
from harness.nightly_report import (  # re-exported: the nightly API is this module
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_REGRESSION,
    NightlyReport,
    write_report,
)
from harness.provenance import code_version
from tasks.instruments.hardware import fingerprint

log = logging.getLogger(__name__)

RERUN = ("all", "changed", "none")
CONFIG_KEYS = ("suites", "rerun", "site", "report", "regression")
REGRESSION_KEYS = ("alpha", "min_effect", "noise_k", "window", "confirm", "metrics",
                   "trust_contended")
CHANGES = ("regression", "improvement", "changed")  # verdicts worth a confirm run
_LOCK_KEY = 0x6E696768  # pg_try_advisory_lock key of `archbench nightly`


class NightlyError(ValueError):
    """Bad nightly config, or the lock held by another nightly; the message is one line."""


@dataclass(frozen=True)
class Regression:
    alpha: float = 0.01
    min_effect: float = 0.05
    noise_k: float = 3.0
    window: int = 10
    confirm: bool = True
    metrics: tuple[str, ...] = ()  # the metrics watched; empty: every metric
    trust_contended: bool = False  # True: a contended measurement may confirm a change


@dataclass(frozen=True)
class NightlyConfig:
    suites: tuple[str, ...]
    rerun: str = "all"
    site: str | None = "site-out"
    report: str = "reports"
    regression: Regression = field(default_factory=Regression)
    base: Path = Path(".")  # relative paths in the file are relative to the working dir

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["base"] = str(self.base)
        return record


def _err(path: Path, key: str, problem: str) -> NightlyError:
    return NightlyError(f"{path}: {key}: {problem}")


def load_config(path: str | Path) -> NightlyConfig:
    """Read and check a nightly config; every problem is one line naming file, key and the
    allowed values."""
    path = Path(path)
    try:
        raw = yamlsafe.load_file(path)
    except yamlsafe.YamlError as err:
        raise NightlyError(f"{path}: {err}") from None
    if not isinstance(raw, dict):
        raise NightlyError(f"{path}: expected a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(CONFIG_KEYS))
    if unknown:
        raise _err(path, unknown[0], f"unknown key; allowed: {', '.join(CONFIG_KEYS)}")
    suites = raw.get("suites")
    if isinstance(suites, str):
        suites = [suites]
    if not isinstance(suites, list) or not suites or not all(
            isinstance(s, str) and s.strip() for s in suites):
        raise _err(path, "suites", "a non-empty list of shipped suite names or suite file "
                   "paths")
    rerun = raw.get("rerun", "all")
    if rerun not in RERUN:
        raise _err(path, "rerun", f"allowed: {', '.join(RERUN)}; got {rerun!r}")
    outs = {}
    for key, default in (("site", "site-out"), ("report", "reports")):
        value = raw.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _err(path, key, "a folder path" + (" or null" if key == "site" else ""))
        if value is None and key == "report":
            raise _err(path, key, "a folder path")
        outs[key] = value
    return NightlyConfig(suites=tuple(suites), rerun=rerun, site=outs["site"],
                         report=outs["report"],
                         regression=_regression(path, raw.get("regression") or {}))


def _regression(path: Path, raw: Any) -> Regression:
    if not isinstance(raw, dict):
        raise _err(path, "regression", f"a mapping with keys {', '.join(REGRESSION_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(REGRESSION_KEYS))
    if unknown:
        raise _err(path, f"regression.{unknown[0]}",
                   f"unknown key; allowed: {', '.join(REGRESSION_KEYS)}")
    d = Regression()

    def number(key: str, lo: float, hi: float, kind: type = float) -> Any:
        value = raw.get(key, getattr(d, key))
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or float(value).is_integer())
        if not ok or not lo < value <= hi:
            raise _err(path, f"regression.{key}", f"a number in ({lo:g}, {hi:g}]; got {value!r}")
        return kind(value)

    confirm = raw.get("confirm", d.confirm)
    if not isinstance(confirm, bool):
        raise _err(path, "regression.confirm", f"true or false; got {confirm!r}")
    trust = raw.get("trust_contended", d.trust_contended)
    if not isinstance(trust, bool):
        raise _err(path, "regression.trust_contended", f"true or false; got {trust!r}")
    metrics = raw.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
        raise _err(path, "regression.metrics", "a list of metric names (empty: every metric)")
    return Regression(alpha=number("alpha", 0, 0.5), min_effect=number("min_effect", 0, 10),
                      noise_k=number("noise_k", 0, 100), window=number("window", 0, 1000, int),
                      confirm=confirm, metrics=tuple(metrics), trust_contended=trust)


# --- the lock --------------------------------------------------------------------------------


@contextmanager
def lock(engine: Engine) -> Iterator[None]:
    """One nightly per database at a time; a second gets a one-line :class:`NightlyError`."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}):
                raise NightlyError(f"{db.redact(str(engine.url))}: another `archbench nightly` "
                                   "holds this database's lock; try again when it finishes")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                conn.commit()
        return
    database = engine.url.database
    path = Path(f"{database}.nightly.lock")
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole nightly
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NightlyError(f"{path}: another `archbench nightly` holds this database's "
                               "lock; try again when it finishes") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


# --- detection -------------------------------------------------------------------------------

SeriesKey = tuple[str, str, str]  # (hardware fingerprint, setting id, metric)


def _series(rows: list[dict[str, Any]], kinds: dict[str, str]
            ) -> dict[SeriesKey, dict[str, Any]]:
    """Rows grouped by series: their values (raw samples of timing rows, one value per seed
    of accuracy rows), with what the report shows of the series."""
    out: dict[SeriesKey, dict[str, Any]] = {}
    for row in rows:
        key = (row["hardware_fingerprint"], row["setting_id"], row["metric"])
        kind = "seeds" if kinds.get(row["task"]) == "accuracy" or not row.get("samples") \
            else "samples"
        entry = out.setdefault(key, {"arch": row["arch"], "task": row["task"],
                                     "metric": row["metric"], "unit": row["unit"],
                                     "higher_is_better": row["higher_is_better"],
                                     "kind": kind, "values": [], "first_id": row["id"],
                                     "cells": set(), "runs": set(), "contended": False})
        entry["values"].extend(_values(row, kind))
        entry["first_id"] = min(entry["first_id"], row["id"])
        entry["cells"].add(row["cell_id"])
        entry["runs"].add(row["run_id"])
        entry["contended"] |= bool((row.get("extra") or {}).get("contended"))
    return out


def _values(row: dict[str, Any], kind: str) -> list[Any]:
    if kind == "samples":
        return list(row.get("samples") or [])
    return [row["value"]] if row.get("value") is not None else []


def _history(engine: Engine, key: SeriesKey, entry: dict[str, Any],
             exclude: set[str]) -> list[list[Any]]:
    rows = db.series_history(engine, *key, before_id=entry["first_id"], exclude_runs=exclude)
    runs: dict[str, list[Any]] = defaultdict(list)
    for row in rows:  # oldest first; a run's seeds (or sample lists) pooled
        runs[row["run_id"]].extend(_values(row, entry["kind"]))
    return [v for v in runs.values() if v]


def detect(engine: Engine, run_ids: set[str], kinds: dict[str, str], cfg: Regression,
           exclude: set[str]) -> dict[SeriesKey, dict[str, Any]]:
    """Each series the runs measured, with its verdict against its history (runs in
    ``exclude`` never count as history: this nightly's own)."""
    rows = db.run_rows(engine, run_ids)
    if cfg.metrics:
        rows = [r for r in rows if r["metric"] in cfg.metrics]
    found = _series(rows, kinds)
    for key, entry in found.items():
        history = _history(engine, key, entry, exclude)
        entry["verdict"] = regress.compare(
            entry["values"], history, entry["higher_is_better"], kind=entry["kind"],
            alpha=cfg.alpha, min_effect=cfg.min_effect, noise_k=cfg.noise_k, window=cfg.window)
    return found


# --- the nightly -----------------------------------------------------------------------------


def run_nightly(cfg: NightlyConfig, url: str, plugins: tuple[str, ...] = (),
                on_line: Any = print, executor: Any = None) -> NightlyReport:
    """The whole nightly (see the module docstring); never raises for a failed cell or a
    detection problem: those are in the report's errors, with exit code 2. ``executor``
    (:mod:`harness.executors`) runs every suite's cells; None: a local one per suite."""
    engine = db.connect(url)
    nightly_id = uuid.uuid4().hex[:12]
    report = NightlyReport(nightly_id, db.now().isoformat(timespec="seconds"))
    suites = [suite.load(name) for name in cfg.suites]  # bad suites: one line before any work
    with lock(engine):
        planned = {s.name: plan.plan(s) for s in suites}
        device = next((c.device for cells in planned.values() for c in cells), "cpu")
        report.fingerprint = (executor.hardware(device) if executor else
                              fingerprint(device)).fingerprint
        report.code_version = code_version()
        db.start_nightly(engine, nightly_id, report.fingerprint, report.code_version,
                         cfg.as_record())
        status = "finished"
        try:
            kinds = {name: tasks.get(name).kind for s in suites for name in s.tasks}
            run_ids: set[str] = set()
            for s in suites:
                result = _run_suite(runner, engine, s, planned[s.name], cfg.rerun, "nightly",
                                    nightly_id, plugins, suite.as_record(s), executor)
                run_ids.add(result.run_id)
                report.runs.append(_run_summary(result, s.name, "nightly"))
                on_line(f"nightly {nightly_id}: ran {s.name}: {_statuses(result)}")
            found = detect(engine, run_ids, kinds, cfg.regression, exclude=run_ids)
            suspects = {k: e for k, e in found.items() if e["verdict"].change in CHANGES}
            confirm_id, again = None, {}
            if suspects and cfg.regression.confirm:
                suspect_cells = set().union(*(e["cells"] for e in suspects.values()))
                confirm_runs = set()
                for s in suites:
                    again_cells = [c for c in planned[s.name] if c.cell_id in suspect_cells]
                    if not again_cells:
                        continue
                    result = _run_suite(runner, engine, s, again_cells, "all", "confirm",
                                        nightly_id, plugins, suite.as_record(s), executor)
                    confirm_runs.add(result.run_id)
                    report.runs.append(_run_summary(result, s.name, "confirm"))
                confirm_id = ",".join(sorted(confirm_runs)) or None
                again = detect(engine, confirm_runs, kinds, cfg.regression,
                               exclude=run_ids | confirm_runs)
            report.counts = _count(found)
            for key, entry in sorted(suspects.items(), key=lambda kv: kv[1]["arch"]):
                first = entry["verdict"]
                second = again.get(key, {}).get("verdict")
                confirmed = (regress.confirm(first, second) if second is not None
                             else not cfg.regression.confirm)
                contended = entry["contended"] or again.get(key, {}).get("contended", False)
                if not cfg.regression.trust_contended:
                    confirmed = confirmed and not contended  # load, not code, may explain it
                change = _change_row(key, entry, first, second, confirmed, nightly_id,
                                     confirm_id)
                change["detail"]["contended"] = contended
                db.store_change_point(engine, change)
                report.changes.append(_jsonable(change))
            for r in report.runs:
                failed = {k: v for k, v in r["statuses"].items() if k not in runner.SUCCESS}
                if failed:
                    report.errors.append(f"{r['suite']} ({r['kind']} run {r['run_id']}): "
                                         + ", ".join(f"{v} {k}" for k, v in failed.items()))
                if r["interrupted"]:
                    report.errors.append(f"{r['suite']}: interrupted")
            for r in report.runs:  # incremental: what each run touched
                derive.refresh(engine, report.code_version, run_id=r["run_id"])
            if cfg.site:
                report.site = str(render.build(engine, cfg.base / cfg.site).parent)
        except Exception as err:  # noqa: BLE001 - reported with exit 2, never lost
            log.exception("nightly %s failed", nightly_id)
            report.errors.append(f"{type(err).__name__}: {' '.join(str(err).split())}")
            status = "failed"
        confirmed = [c for c in report.changes if c["confirmed"] and c["change"] == "regression"]
        report.exit_code = (EXIT_ERROR if report.errors else
                            EXIT_REGRESSION if confirmed else EXIT_CLEAN)
        paths = write_report(report, cfg.base / cfg.report)
        db.finish_nightly(engine, nightly_id, status, report.exit_code, report.as_dict())
        on_line(f"nightly {nightly_id}: report {paths[0]}")
    return report


def _run_suite(runner: Any, engine: Engine, s: Any, cells: list[Any], rerun: str, kind: str,
               nightly_id: str, plugins: tuple[str, ...], record: dict[str, Any],
               executor: Any = None) -> Any:
    headlines = {name: tasks.get(name).headline for name in s.tasks}
    return runner.run(cells, engine, suite_name=s.name, timeout_s=s.timeout_s, plugins=plugins,
                      headlines=headlines, rerun=rerun, kind=kind, config=record,
                      nightly_id=nightly_id, executor=executor)


def _statuses(result: Any) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))
    return f"{counts or 'nothing new'} ({result.skipped} already done)"


def _run_summary(result: Any, suite_name: str, kind: str) -> dict[str, Any]:
    return {"run_id": result.run_id, "suite": suite_name, "kind": kind,
            "measured": len(result.outcomes), "skipped": result.skipped,
            "statuses": dict(result.statuses), "interrupted": result.interrupted}


def _count(found: dict[SeriesKey, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for entry in found.values():
        counts[entry["verdict"].change] += 1
    counts["series"] = len(found)
    return dict(counts)


def _change_row(key: SeriesKey, entry: dict[str, Any], first: regress.Verdict,
                second: regress.Verdict | None, confirmed: bool, nightly_id: str,
                confirm_id: str | None) -> dict[str, Any]:
    fp, setting, metric = key
    return {"hardware_fingerprint": fp, "setting_id": setting, "metric": metric,
            "arch": entry["arch"], "task": entry["task"],
            "run_id": sorted(entry["runs"])[0], "confirm_run_id": confirm_id,
            "nightly_id": nightly_id, "change": first.change, "confirmed": confirmed,
            "rel_change": first.rel_change, "p_value": first.p_value,
            "threshold": first.threshold, "confidence": first.confidence,
            "method": first.method,
            "detail": {"unit": entry["unit"], "first": first.to_dict(),
                       "again": second.to_dict() if second is not None else None}}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
