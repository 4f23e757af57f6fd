"""Derived figures from sequence-length sweeps: scaling exponents and crossover lengths.

A series is one (hardware, task, metric, architecture, task config without its length key);
its points are the newest ``ok`` value at each length. Measured, not quoted from complexity.

Which tasks and metrics take part is what the tasks declared, as stored in the database with
the results (:class:`Declared`, read from ``db.catalog``): a task's ``sweep_key``, a metric's
``swept`` flag, and the two roles whose product is the achieved FLOP/s. This module knows no
task or metric by name.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.engine import Engine

from harness import db, queries
from harness.ids import canonical_hash
from harness.seeds import mean_ci
from harness.values import MAX_PATHS, sanitize
from tasks.instruments.stats import loglog_slope

log = logging.getLogger(__name__)

MIN_POINTS = 3
FLOP_ROLE = "forward_flop_per_token"  # x FLOP_ROLE's partner below = achieved FLOP/s
SPEED_ROLE = "forward_tokens_per_s"
ACHIEVED_KINDS = ("achieved_flops_per_s", "fraction_of_peak")


@dataclass(frozen=True)
class Declared:
    """What the stored tasks declare: each task's sweep key, the (task, metric) pairs fitted
    against it, and the (task, metric) pairs of each role."""

    sweep_keys: dict[str, str] = field(default_factory=dict)
    swept: frozenset[tuple[str, str]] = frozenset()
    roles: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, tasks: Iterable[dict[str, Any]]) -> Declared:
        """From catalog task entries (``harness.catalog.task_entry`` or ``db.catalog``)."""
        keys, swept, roles = {}, set(), defaultdict(list)
        for task in tasks:
            if task.get("sweep_key"):
                keys[task["name"]] = task["sweep_key"]
            for m in task.get("metrics", ()):
                if m.get("swept"):
                    swept.add((task["name"], m["name"]))
                if m.get("role"):
                    roles[m["role"]].append((task["name"], m["name"]))
        return cls(keys, frozenset(swept), {r: tuple(sorted(p)) for r, p in roles.items()})

    def inputs(self, *roles: str) -> tuple[tuple[str, str], ...]:
        return tuple(pair for role in roles for pair in self.roles.get(role, ()))


def declared(engine: Engine) -> Declared:
    """The declarations of the newest stored version of every task."""
    return Declared.from_entries(db.catalog(engine)["tasks"].values())


def sweep_series(rows: list[dict[str, Any]], decl: Declared
                 ) -> dict[tuple, dict[str, dict[int, float]]]:
    """(fingerprint, task, metric, series id) -> arch -> {length: newest ok value}."""
    out: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:  # oldest first, so newer values overwrite
        key = decl.sweep_keys.get(row["task"])
        if (row["status"] != "ok" or (row["task"], row["metric"]) not in decl.swept
                or key not in row["task_config"]):
            continue
        rest = {k: v for k, v in row["task_config"].items() if k != key}
        series = canonical_hash({"task_config": rest, "key": key, "device": row["device"],
                                 "dtype": row["dtype"], "threads": row["threads"]})
        group = (row["hardware_fingerprint"], row["task"], row["metric"], series, key)
        out[group][row["arch"]][int(row["task_config"][key])] = float(row["value"])
    return out


def crossover(a: dict[int, float], b: dict[int, float]) -> float | None:
    """First length where the sign of log(a) - log(b) flips, interpolated in log-log space."""
    xs = sorted(set(a) & set(b))
    diffs = [(x, math.log(a[x]) - math.log(b[x])) for x in xs if a[x] > 0 and b[x] > 0]
    for (x0, d0), (x1, d1) in zip(diffs, diffs[1:], strict=False):
        if d0 == 0:
            return float(x0)
        if d0 * d1 < 0:
            frac = d0 / (d0 - d1)
            return math.exp(math.log(x0) + frac * (math.log(x1) - math.log(x0)))
    return None


def compute(rows: list[dict[str, Any]], code_version: str, decl: Declared
            ) -> dict[str, list[dict[str, Any]]]:
    """Per fingerprint: scaling exponents per variant and crossovers per pair of variants."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (fp, task, metric, series, key), by_arch in sorted(sweep_series(rows, decl).items()):
        base = {"task": task, "metric": metric, "series": series, "code_version": code_version}
        fits = {a: pts for a, pts in sorted(by_arch.items()) if len(pts) >= MIN_POINTS}
        for arch, pts in fits.items():
            xs = sorted(pts)
            out[fp].append({**base, "kind": "scaling_exponent", "arch": arch, "other_arch": None,
                            "value": loglog_slope(xs, [pts[x] for x in xs]), "unit": "",
                            "method": f"least-squares slope of log({metric}) on log({key}) over "
                                      f"{len(xs)} lengths {xs[0]}..{xs[-1]}",
                            "points": {"key": key, "x": xs, "y": [pts[x] for x in xs]}})
        for a, b in combinations(sorted(fits), 2):
            x = crossover(fits[a], fits[b])
            if x is None:
                continue
            xs = sorted(set(fits[a]) & set(fits[b]))
            faster_above = a if fits[a][xs[-1]] < fits[b][xs[-1]] else b
            out[fp].append({**base, "kind": "crossover_length", "arch": a, "other_arch": b,
                            "value": x, "unit": key,
                            "method": f"sign change of log({metric}) difference between measured "
                                      f"lengths, interpolated in log-log; {faster_above} is "
                                      f"lower above it",
                            "points": {"key": key, "x": xs, "lower_above": faster_above}})
    return out


def seed_means(rows: list[dict[str, Any]], code_version: str) -> dict[str, list[dict[str, Any]]]:
    """Every metric over seeds: mean with a Student-t 95% CI, per setting (the cell's config
    hash, which excludes the seed), from the newest ok row of each seed. For timed metrics the
    seeds are rounds: separate processes, interleaved with the other variants, so the interval
    includes the between-process variation a single cell's IQR cannot see."""
    newest: dict[tuple, dict[int, float]] = defaultdict(dict)
    extras: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if row["status"] == "ok" and row["value"] is not None:
            key = (row["hardware_fingerprint"], row["arch"], row["task"], row["metric"],
                   row["config_hash"], row["unit"])
            newest[key][row["seed"]] = float(row["value"])
            extras[key][row["seed"]] = row.get("extra") or {}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, by_seed in sorted(newest.items()):
        fp, arch, task, metric, config_hash, unit = key
        seeds = sorted(by_seed)
        ci = mean_ci([by_seed[s] for s in seeds])
        if ci is None:  # one seed: no interval to give
            continue
        mean, low, high = ci
        points = {"seeds": seeds, "n_seeds": len(seeds), "ci_low": low, "ci_high": high,
                  "values": [by_seed[s] for s in seeds]}
        points.update(training_facts([extras[key][s] for s in seeds]))
        out[fp].append({"task": task, "metric": metric, "series": config_hash,
                        "kind": "seed_mean", "arch": arch, "other_arch": None, "value": mean,
                        "unit": unit, "code_version": code_version,
                        "method": f"mean over {len(seeds)} seeds, Student-t 95% CI",
                        "points": points})
    return out


TRAINING_FACTS = ("num_params", "num_active_params", "token_budget", "steps", "batch_size",
                  "seq_len")


def training_facts(extras: list[dict[str, Any]]) -> dict[str, Any]:
    """What a trained (accuracy) row's reader needs beside the mean: the LR chosen for each
    seed, the grid it came from, the parameter count and the token budget (the same for every
    seed of one setting, so the first seed's value is given)."""
    if not extras or "lr" not in extras[0]:
        return {}
    facts: dict[str, Any] = {"chosen_lrs": [e.get("lr") for e in extras]}
    if "lr_grid" in extras[0]:
        facts["lr_grid"] = extras[0]["lr_grid"]
    facts.update({k: extras[0][k] for k in TRAINING_FACTS if k in extras[0]})
    return facts


def _newest(rows: list[dict[str, Any]], pairs: tuple[tuple[str, str], ...]
            ) -> dict[tuple, dict]:
    """Newest ok row of the (task, metric) ``pairs`` per (fp, arch, arch config, seq_len,
    batch, device, dtype, threads)."""
    out = {}
    for r in rows:
        if (r["task"], r["metric"]) in pairs and r["status"] == "ok":
            cfg = r["task_config"]
            out[(r["hardware_fingerprint"], r["arch"], canonical_hash(r["arch_config"]),
                 cfg.get("seq_len"), cfg.get("batch_size"), r["device"], r["dtype"],
                 r["threads"])] = r
    return out


def achieved(rows: list[dict[str, Any]], peaks: dict[tuple, float], code_version: str,
             decl: Declared) -> dict[str, list[dict[str, Any]]]:
    """FLOP/s reached in a forward pass: counted FLOP/token (the metric declaring
    ``FLOP_ROLE``) x measured tokens/s (``SPEED_ROLE``) at the same shape, and its fraction of
    the same setting's measured matmul peak; stored under the task that measured the speed."""
    flops = _newest(rows, decl.inputs(FLOP_ROLE))
    speed = _newest(rows, decl.inputs(SPEED_ROLE))
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in sorted(set(flops) & set(speed), key=str):
        fp, arch, _, seq_len, batch, device, dtype, threads = key
        value = flops[key]["value"] * speed[key]["value"]
        base = {"task": speed[key]["task"], "metric": "achieved_flops_per_s",
                "series": canonical_hash({"seq_len": seq_len, "batch_size": batch}),
                "arch": arch, "other_arch": None, "code_version": code_version,
                "points": {"seq_len": seq_len, "batch_size": batch, "device": device,
                           "dtype": dtype, "threads": threads}}
        out[fp].append({**base, "kind": "achieved_flops_per_s", "value": value,
                        "unit": "FLOP/s", "method": f"{flops[key]['task']} FLOP/token x "
                        f"{speed[key]['task']} median tokens/s at the same shape"})
        peak = peaks.get((fp, device, dtype, threads))
        if peak:
            out[fp].append({**base, "kind": "fraction_of_peak", "value": value / peak,
                            "unit": "fraction", "method": f"achieved / measured matmul peak "
                            f"{peak:.3g} FLOP/s of this setting"})
    return out


def _figures(engine: Engine, code_version: str, pairs: set[tuple[str, str]] | None,
             fps: set[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Derived figures of the sweeps and seed means of ``pairs`` ((fingerprint, task); every
    one for None) and the achieved FLOP/s of ``fps`` (every one for None), per fingerprint in
    the order a full recompute lists them. Reads only the rows and columns these need."""
    decl = declared(engine)
    computed = compute(queries.sweep_rows(engine, sorted(decl.swept), pairs=pairs), code_version,
                       decl)
    achieved_rows = queries.shape_rows(engine, decl.inputs(FLOP_ROLE, SPEED_ROLE), fps)
    for extra_rows in (achieved(achieved_rows, db.peaks(engine), code_version, decl),
                       seed_means(queries.seed_rows(engine, pairs), code_version)):
        for fp, extra in extra_rows.items():
            computed.setdefault(fp, []).extend(extra)
    return computed


def _count(engine: Engine) -> int:
    """Derived figures of every fingerprint that has results (what a full refresh wrote)."""
    d = db.Derived.__table__
    stmt = select(func.count()).select_from(d).where(d.c.hardware_fingerprint.in_(
        select(db.Result.__table__.c.hardware_fingerprint).distinct()))
    with engine.connect() as conn:
        return conn.scalar(stmt) or 0


def _sanitized(fp: str, row: dict[str, Any]) -> dict[str, Any]:
    """A derived row made portable as ``db.replace_derived`` makes it (changes logged)."""
    out, notes, non_finite = sanitize(db.Derived, {"hardware_fingerprint": fp, **row})
    if non_finite:
        notes.append("non-finite numbers stored as null at " + ", ".join(non_finite[:MAX_PATHS]))
    if notes:
        log.warning("derived figure stored with changes: %s", "; ".join(notes))
    return out


def refresh(engine: Engine, code_version: str, run_id: str | None = None) -> int:
    """Recompute and store derived figures; returns how many derived figures the
    fingerprints with results now have.

    Without ``run_id``: every fingerprint's figures, recomputed as a whole. With ``run_id``
    (the run just stored): only the series that run touched, i.e. the sweeps and seed means of
    each (fingerprint, task) it stored rows for and the achieved FLOP/s of each fingerprint it
    ran on (the matmul peak may have been re-measured), replacing just those derived rows in
    one transaction; the other figures are left as they were (with the code version that
    computed them). Both read only the columns and newest rows they need."""
    if run_id is None:
        computed = _figures(engine, code_version, None, None)
        fps = queries.fingerprints(engine)
        return sum(db.replace_derived(engine, fp, computed.get(fp, [])) for fp in fps)
    pairs = queries.touched_pairs(engine, run_id)
    if not pairs:
        return _count(engine)
    fps = {fp for fp, _ in pairs}
    computed = _figures(engine, code_version, pairs, fps)
    rows = [_sanitized(fp, row) for fp in sorted(computed) if fp in fps
            for row in computed[fp]
            if (fp, row["task"]) in pairs or row["kind"] in ACHIEVED_KINDS]
    d = db.Derived.__table__
    c = d.c
    with db._writing(engine) as conn:
        for fp in sorted(fps):
            tasks = sorted(t for f, t in pairs if f == fp)
            conn.execute(delete(d).where(c.hardware_fingerprint == fp, or_(
                and_(c.task.in_(tasks), c.kind.not_in(ACHIEVED_KINDS)),
                c.kind.in_(ACHIEVED_KINDS))))
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:  # executemany needs one key set per statement
            by_keys[tuple(row)].append(row)
        for same in by_keys.values():
            conn.execute(insert(d), same)
    return _count(engine)
