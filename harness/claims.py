"""Seed-paper claims as data, checked against a results database: what no leaderboard has.

Each claim in ``harness/claims.yaml`` (shipped in the wheel) states one result of a paper in one
sentence, names the shipped suite that tests it (``harness/suites/<suite>.yaml``), the task and
metric it reads, and a *predicate*: a list of comparisons, all of which must hold. Predicates
are data, never evaluated code. :func:`evaluate` gives one :class:`Verdict` per claim and
machine (hardware fingerprint): ``reproduced``, ``not reproduced`` or ``not run`` (evidence
missing), with the rows that decided it. It reads the database only (no torch, no registries),
so the site built from it is a function of the database alone.

Predicate vocabulary (each comparison is a mapping with exactly one operator):

- ``{arch: A, at_least: X}`` / ``{arch: A, at_most: X}``: A's value is >= X / <= X.
- ``{better: A, than: B, by: D}``: A's value minus B's is >= D (``by`` defaults to 0; a
  negative ``by`` reads "A is not worse than B by more than -D"). "Better" means higher: every
  claim's metric here is an accuracy; for lower-is-better metrics swap A and B.
- ``{arch: A, exponent_at_most: X}`` / ``{arch: A, exponent_at_least: X}``: A's scaling
  exponent (``derived`` rows of kind ``scaling_exponent``: the log-log slope of the metric
  over a length sweep, see harness/derive.py) is <= X / >= X.

Options of a comparison: ``metric`` (instead of the claim's), ``where`` (task config values the
rows must have, merged over the claim's ``where``; result comparisons only: a derived figure's
series is a hash) and ``relative_to_floor: true`` (compare ``value - floor``, the floor being
the trivial-strategy accuracy the task stores in each row's ``extra``; result comparisons only).

Which rows count, per (machine, variant, metric, ``where``):

1. rows of runs of the claim's suite when the machine has any, else rows of any run (the
   evidence names each row's run and suite);
2. of those, finished rows (status in ``db.DONE_STATUSES``, value not null); the setting
   (``setting_id``: variant and task configs, device, dtype, threads) of the newest one
   (highest id) is used, and within it the newest row of each seed; the value compared is the
   mean over seeds, every seed's row given as evidence;
3. no row at all -> the claim is "not run" on that machine (the reason names what is missing);
   rows but none finished (failed, timeout, diverged, oom, unsupported...) -> "not run" with
   the newest row's status and error.

A scaling exponent is the newest derived figure (highest id) of (machine, task, metric,
variant); none, or one with no value, -> "not run". Machines are those with any row of the
claim's task; a claim whose task has no rows anywhere gets one "not run" verdict with machine
None.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from harness import db, queries
from harness.claimfile import (  # re-exported: the claims API is this module
    DEFAULT_PATH,
    EXPONENT_OPS,
    Claim,
    ClaimError,
    load,
    shipped_suites,
)
from harness.ids import setting_id

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
STATUSES = (REPRODUCED, NOT_REPRODUCED, NOT_RUN)
__all__ = ["DEFAULT_PATH", "STATUSES", "Claim", "ClaimError", "Verdict", "as_text", "evaluate",
           "load", "shipped_suites"]


@dataclass
class Verdict:
    claim: Claim
    machine: str | None  # hardware fingerprint; None when the claim's task has no rows at all
    status: str  # one of STATUSES
    reason: str  # one line
    evidence: list[dict[str, Any]] = field(default_factory=list)


# --- reading the database --------------------------------------------------------------------

RESULT_COLUMNS = ("id", "run_id", "setting_id", "hardware_fingerprint", "arch", "arch_config",
                  "task", "task_config", "seed", "metric", "unit", "value", "ci_low", "ci_high",
                  "spread", "spread_kind", "n_samples", "status", "error", "extra", "device",
                  "dtype", "threads", "created_at")
DERIVED_COLUMNS = ("id", "hardware_fingerprint", "task", "metric", "kind", "arch", "value",
                   "unit", "method", "points", "series")


def _exponents(engine: Engine, task: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(fingerprint, metric, arch) -> the newest scaling exponent of ``task``."""
    d = db.Derived.__table__
    stmt = (select(*(d.c[c] for c in DERIVED_COLUMNS))
            .where(d.c.task == task, d.c.kind == "scaling_exponent").order_by(d.c.id))
    with engine.connect() as conn:
        return {(row["hardware_fingerprint"], row["metric"], row["arch"]): dict(row)
                for row in conn.execute(stmt).mappings()}  # newest last wins


def _machines(engine: Engine) -> dict[str, list[str]]:
    """task -> the fingerprints with any row of it."""
    r = db.Result.__table__.c
    stmt = select(r.task, r.hardware_fingerprint).distinct()
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for task, fp in conn.execute(stmt):
            out.setdefault(task, []).append(fp)
    return {task: sorted(fps) for task, fps in out.items()}


def _machines_of(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for row in rows:
        out.setdefault(row["task"], set()).add(row["hardware_fingerprint"])
    return {task: sorted(fps) for task, fps in out.items()}


# --- evaluating ------------------------------------------------------------------------------


@dataclass
class _Operand:
    """One side of a comparison: its value, or why there is none, and its evidence."""

    label: str
    value: float | None
    missing: str | None
    evidence: list[dict[str, Any]]


def _operands(c: dict[str, Any]) -> list[str]:
    return [c["better"], c["than"]] if c["op"] == "better" else [c["arch"]]


def _needs(claim: Claim) -> tuple[set[str], set[str]]:
    archs = {a for c in claim.predicate for a in _operands(c)}
    metrics = {c.get("metric", claim.metric) for c in claim.predicate}
    return archs, metrics


def _matches(config: Any, where: dict[str, Any]) -> bool:
    """Every ``where`` key is in the config with an equal value (true is not 1)."""
    config = config if isinstance(config, dict) else {}
    return all(k in config and config[k] == v
               and isinstance(config[k], bool) == isinstance(v, bool) for k, v in where.items())


def _setting(row: dict[str, Any]) -> str:
    return row["setting_id"] or setting_id(row)


def _result_evidence(row: dict[str, Any], used: bool) -> dict[str, Any]:
    """The facts a reader needs of one row."""
    extra = row.get("extra") or {}
    out = {"kind": "result", "arch": row["arch"], "task": row["task"], "metric": row["metric"],
           "value": row["value"], "unit": row["unit"], "ci_low": row["ci_low"],
           "ci_high": row["ci_high"], "spread": row["spread"], "spread_kind": row["spread_kind"],
           "n_samples": row["n_samples"], "seed": row["seed"], "task_config": row["task_config"],
           "arch_config": row["arch_config"], "run_id": row["run_id"], "suite": row["suite"],
           "status": row["status"], "error": row["error"], "result_id": row["id"],
           "used": used}
    for key in ("floor", "chance"):
        if isinstance(extra, dict) and key in extra:
            out[key] = extra[key]
    return out


def _describe(arch: str, metric: str, where: dict[str, Any], floor: bool) -> str:
    cond = ", ".join(f"{k}={v}" for k, v in where.items())
    label = f"{arch} {metric}" + (" above floor" if floor else "")
    return f"{label} ({cond})" if cond else label


def _result_operand(rows: list[dict[str, Any]], claim: Claim, arch: str, metric: str,
                    where: dict[str, Any], floor: bool) -> _Operand:
    """The value of one variant by the rules of the module docstring."""
    label = _describe(arch, metric, where, floor)
    mine = [r for r in rows if r["arch"] == arch and r["metric"] == metric
            and _matches(r["task_config"], where)]
    if not mine:
        return _Operand(label, None, f"no {label} row", [])
    pool = [r for r in mine if r["suite"] == claim.suite] or mine
    done = [r for r in pool if r["status"] in db.DONE_STATUSES and r["value"] is not None]
    if not done:
        last = pool[-1]
        error = (last["error"] or "").strip().splitlines()
        why = f": {error[0][:120]}" if error else ""
        return _Operand(label, None, f"{label} is {last['status']}{why}",
                        [_result_evidence(last, False)])
    setting = _setting(done[-1])
    by_seed = {r["seed"]: r for r in done if _setting(r) == setting}  # newest last wins
    chosen = [by_seed[s] for s in sorted(by_seed)]
    evidence = [_result_evidence(r, True) for r in chosen]
    values = []
    for row in chosen:
        value = float(row["value"])
        if floor:
            extra_floor = (row.get("extra") or {}).get("floor")
            if not isinstance(extra_floor, (int, float)) or isinstance(extra_floor, bool):
                return _Operand(label, None, f"{label}: row {row['id']} has no floor", evidence)
            value -= float(extra_floor)
        values.append(value)
    return _Operand(label, sum(values) / len(values), None, evidence)


def _exponent_operand(exponents: dict[tuple[str, str, str], dict[str, Any]], fp: str,
                      arch: str, metric: str) -> _Operand:
    label = f"{arch} scaling exponent of {metric}"
    row = exponents.get((fp, metric, arch))
    if row is None:
        return _Operand(label, None, f"no {label} (needs a sweep over >= 3 lengths)", [])
    evidence = [{"kind": "scaling_exponent", "arch": arch, "task": row["task"],
                 "metric": metric, "value": row["value"], "method": row["method"],
                 "points": row["points"], "series": row["series"], "status": "derived",
                 "derived_id": row["id"], "used": row["value"] is not None}]
    if row["value"] is None:
        return _Operand(label, None, f"{label} could not be fitted", evidence)
    return _Operand(label, float(row["value"]), None, evidence)


def _check(c: dict[str, Any], sides: list[_Operand]) -> tuple[bool, str]:
    """Whether one comparison holds, and a short account of it (value, then what is needed)."""
    op = c["op"]
    if op == "better":
        a, b = sides
        diff = a.value - b.value  # type: ignore[operator]
        return diff >= c["by"], (f"{a.label} {a.value:.3g} - {b.label} {b.value:.3g} = "
                                 f"{diff:+.3g} (needs >= {c['by']:+.3g})")
    side = sides[0]
    bound = c[op]
    at_least = op.endswith("at_least")
    ok = side.value >= bound if at_least else side.value <= bound  # type: ignore[operator]
    return ok, f"{side.label} {side.value:.3g} (needs {'>=' if at_least else '<='} {bound:.3g})"


def _verdict(claim: Claim, fp: str, rows: list[dict[str, Any]],
             exponents: dict[tuple[str, str, str], dict[str, Any]]) -> Verdict:
    """One claim on one machine."""
    mine = [r for r in rows if r["hardware_fingerprint"] == fp]
    evidence: list[dict[str, Any]] = []
    seen: set[tuple[str, Any]] = set()
    missing: list[str] = []
    checks: list[tuple[bool, str]] = []
    for c in claim.predicate:
        metric = c.get("metric", claim.metric)
        if c["op"] in EXPONENT_OPS:
            sides = [_exponent_operand(exponents, fp, c["arch"], metric)]
        else:
            where = {**claim.where, **c.get("where", {})}
            floor = c.get("relative_to_floor", False)
            sides = [_result_operand(mine, claim, a, metric, where, floor) for a in _operands(c)]
        for side in sides:
            for ev in side.evidence:
                key = (ev["kind"], ev.get("result_id", ev.get("derived_id")))
                if key not in seen:
                    seen.add(key)
                    evidence.append(ev)
            if side.missing and side.missing not in missing:
                missing.append(side.missing)
        if not any(s.missing for s in sides):
            checks.append(_check(c, sides))
    if missing:
        return Verdict(claim, fp, NOT_RUN, "no evidence: " + "; ".join(missing)
                       + f" (run suite {claim.suite})", evidence)
    failed = [text for ok, text in checks if not ok]
    if failed:
        return Verdict(claim, fp, NOT_REPRODUCED, "fails: " + "; ".join(failed), evidence)
    return Verdict(claim, fp, REPRODUCED, "holds: " + "; ".join(t for _, t in checks), evidence)


def evaluate(engine: Engine, claims: list[Claim] | None = None,
             rows: list[dict[str, Any]] | None = None) -> list[Verdict]:
    """Verdicts of ``claims`` (default: the shipped ones), in claim order, then machine order:
    one per claim per machine with any row of the claim's task, or one "not run" verdict with
    machine None when no machine has any. The rows of every claim are read in one query
    (``queries.claim_rows``), each exponent table once per task. ``rows``: rows already read
    (``RESULT_COLUMNS`` and ``suite``) holding at least, per machine, setting, metric, seed and
    suite, the newest finished row and the newest row (``queries.board_rows``, what the site
    reads): the same verdicts without reading every version's rows again."""
    claims = load() if claims is None else claims
    machines = _machines(engine) if rows is None else _machines_of(rows)
    wanted = sorted({(c.task, *map(tuple, map(sorted, _needs(c)))) for c in claims
                     if machines.get(c.task)})
    by_key: dict[tuple, list[dict[str, Any]]] = {key: [] for key in wanted}
    for row in queries.claim_rows(engine, wanted, RESULT_COLUMNS) if rows is None else rows:
        for key in wanted:
            if row["task"] == key[0] and row["arch"] in key[1] and row["metric"] in key[2]:
                by_key[key].append(row)
    exponents: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
    out: list[Verdict] = []
    for claim in claims:
        fps = machines.get(claim.task, [])
        if not fps:
            out.append(Verdict(claim, None, NOT_RUN, f"no results of task {claim.task} in this "
                               f"database (run suite {claim.suite})", []))
            continue
        rows = by_key[(claim.task, *map(tuple, map(sorted, _needs(claim))))]
        if any(c["op"] in EXPONENT_OPS for c in claim.predicate) and claim.task not in exponents:
            exponents[claim.task] = _exponents(engine, claim.task)
        out.extend(_verdict(claim, fp, rows, exponents.get(claim.task, {})) for fp in fps)
    return out


# --- showing ---------------------------------------------------------------------------------


def as_text(verdicts: Iterable[Verdict], width: int = 100) -> str:
    """A terminal table: claim, machine (first 12 characters of its fingerprint) and status on
    one line, the reason under it (indented, wrapped to ``width``), then the counts."""
    verdicts = list(verdicts)
    if not verdicts:
        return "no claims"
    rows = [(v.claim.id, (v.machine or "-")[:12], v.status, v.reason) for v in verdicts]
    head = ("claim", "machine", "status")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)).rstrip())
        lines.extend(textwrap.wrap(row[3], width=width, initial_indent="    ",
                                   subsequent_indent="      "))
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
