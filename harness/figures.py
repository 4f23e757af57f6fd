"""The site's figures from boards (``harness.boards``), drawn by ``harness.charts``.

Pareto charts of a task's accuracy against each efficiency figure of the same variants on the
same machine (and against parameters), scaling plots of a length sweep's headline with 95% CI
bars, the scaling page's per-figure plots with their fitted exponents and crossovers, and
whether a crossover is resolved by the measurements beside it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from markupsafe import Markup

from harness import boards as boards_mod
from harness import charts
from harness.cells import fmt


def pareto_charts(board: dict[str, Any], all_boards: list[dict[str, Any]]) -> list[Markup]:
    """Accuracy (headline, with its CI) against each efficiency figure of the same variants on
    the same machine, and against parameters where the rows recorded them."""
    head = board["columns"][0]
    acc = {r["arch"]: r["cells"][0] for r in reversed(board["rows"])
           if r["cells"][0]["value"] is not None}
    out = []
    for task, other, i in boards_mod.pareto_inputs(board, all_boards):
        col = other["columns"][i]
        cost = {r["arch"]: r["cells"][i] for r in reversed(other["rows"])
                if r["cells"][i]["value"] is not None and r["cells"][i]["value"] > 0}
        points = [_pt(a, cost[a]["value"], acc[a], f"{col['label']} {fmt(cost[a]['value'])}")
                  for a in sorted(set(acc) & set(cost))]
        if len(points) >= 2:
            where = ", ".join(f"{k} {v}" for k, v in other["setting"][:3])
            out.append(charts.pareto(points, f"{task}: {col['label']} ({where})", head["label"],
                                     higher_y=head["higher_is_better"] is not False))
    params = [_pt(a, c["params"], c, f"{c['params']:,} parameters") for a, c in sorted(
        acc.items()) if isinstance(c["params"], (int, float)) and c["params"] > 0]
    if len(params) >= 2:
        out.append(charts.pareto(params, "parameters", head["label"],
                                 higher_y=head["higher_is_better"] is not False))
    return out


def _pt(arch: str, x: float, c: dict[str, Any], what: str) -> charts.Point:
    marks = ", ".join(m["mark"] for m in c["marks"])
    tip = f"{arch}: {c['text']} {c['ci']}; {what}" + (f"; {marks}" if marks else "")
    return charts.Point(x=float(x), y=c["value"], label=arch, tip=tip, y_low=c["low"],
                        y_high=c["high"], marked=bool(c["marks"]))


def scaling_charts(task_boards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per length sweep of the task: the headline figure against length, CI bars."""
    out = []
    for sweep in boards_mod.sweeps(task_boards):
        col = sweep["members"][0][1]["columns"][0]
        points = []
        for x, b in sweep["members"]:
            if b["columns"][0]["metric"] != col["metric"]:
                continue
            for r in b["rows"]:
                c = r["cells"][0]
                if c["value"] is not None and c["value"] > 0:
                    points.append(_pt(r["arch"], x, c, f"{sweep['x_key']} {x:g}"))
        if points:
            out.append({"sweep": sweep, "label": col["label"],
                        "svg": charts.lines(points, sweep["x_key"], col["label"])})
    return out


def in_sweep(arch: str, sweep: dict[str, Any]) -> bool:
    return any(r["arch"] == arch for _, b in sweep["members"] for r in b["rows"])


def scaling_page(all_boards: list[dict[str, Any]], derived: list[dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    """Per length sweep, every figure against length (CI bars; hollow points carry a mark,
    listed under the plot) with the fitted exponents and crossovers of that figure."""
    fitted: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for d in derived:
        fitted[(d["hardware_fingerprint"], d["task"], d["metric"])].append(d)
    out = []
    for sweep in boards_mod.sweeps(all_boards):
        first = sweep["members"][0][1]
        for col in first["columns"]:
            points, marked, cells = [], [], {}
            for x, b in sweep["members"]:
                i = next((k for k, c in enumerate(b["columns"]) if c["metric"] == col["metric"]),
                         None)
                for r in b["rows"] if i is not None else []:
                    c = r["cells"][i]
                    if c["value"] is not None and c["value"] > 0:
                        points.append(_pt(r["arch"], x, c, f"{sweep['x_key']} {x:g}"))
                        cells[(r["arch"], x)] = c
                        if c["marks"]:
                            marked.append({"arch": r["arch"], "x": x, "cell": c})
            if len({p.x for p in points}) < 2:
                continue
            mine = fitted.get((sweep["fingerprint"], sweep["task"], col["metric"]), [])
            out.append({"sweep": sweep, "label": col["label"], "metric": col["metric"],
                        "svg": charts.lines(points, sweep["x_key"], col["label"]),
                        "marked": marked,
                        "exponents": [d for d in mine if d["kind"] == "scaling_exponent"],
                        "crossovers": [{**d, "doubt": crossover_doubt(d, cells)} for d in mine
                                       if d["kind"] == "crossover_length"]})
    return out


def crossover_doubt(d: dict[str, Any], cells: dict[tuple[str, float], dict[str, Any]]) -> str:
    """Why a crossover is not resolved by the measurements, or "": a point on either side of
    it carries a mark (noisy, contended...), or the two variants' CIs overlap at the lengths
    around it, so the sign change may be noise."""
    xs = sorted((d.get("points") or {}).get("x") or [])
    below = [x for x in xs if x <= d["value"]]
    above = [x for x in xs if x >= d["value"]]
    if not below or not above:
        return ""
    reasons = []
    for x in dict.fromkeys((below[-1], above[0])):
        a, b = cells.get((d["arch"], x)), cells.get((d["other_arch"], x))
        if a is None or b is None:
            continue
        marks = [f"{arch} {m['mark']}" for arch, c in ((d["arch"], a), (d["other_arch"], b))
                 for m in c["marks"]]
        if marks:
            reasons.append(f"at {x:g}: " + ", ".join(marks))
        elif None not in (a["low"], a["high"], b["low"], b["high"]) and \
                a["low"] <= b["high"] and b["low"] <= a["high"]:
            reasons.append(f"at {x:g}: the 95% CIs overlap")
    return "; ".join(reasons)
