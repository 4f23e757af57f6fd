"""History pages: each board's series followed across runs and code versions.

A *series* is one (machine, setting, metric): ``results.setting_id`` names the variant, task,
their configs, device, dtype and threads without code versions or seeds (``harness.ids``), so
the newest board shows one version while its history shows every run that measured the same
setting. Per run a point is the mean of the run's finished rows (one per seed); its bar is the
range over seeds where the run had several, else the row's own 95% CI. Change points found by
regression detection (``harness.nightly``) are drawn hollow and listed under the chart.
The page follows the board's headline figure. A line's newest point and its change points are
markers with their bar and a tooltip (focus, hover or tap); the others are vertices of the line,
their bars one shaded band, which keeps a page of 22 variants over a hundred runs small (every
row is in ``archbench export``).

Only series measured in two runs or more get a page (``queries.history_points``); a board links
to its page where one exists. Pure functions of query rows and boards: no registries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness import charts
from harness.cells import fmt

SeriesKey = tuple[str, str, str]  # (hardware fingerprint, setting id, metric)


def _series_of(boards: list[dict[str, Any]]) -> dict[SeriesKey, tuple[dict[str, Any], str]]:
    """Series key -> (its board, the variant's line label) for every line of every board."""
    out: dict[SeriesKey, tuple[dict[str, Any], str]] = {}
    for b in boards:
        for row in b["rows"]:
            if not row.get("setting_id"):
                continue
            name = row["arch"] + (f" {row['arch_config_text']}" if row["show_config"] else "")
            out.setdefault((b["fingerprint"], row["setting_id"], b["columns"][0]["metric"]),
                           (b, name))
    return out


def metrics(boards: list[dict[str, Any]]) -> list[str]:
    """The metrics the history pages follow: each board's headline."""
    return sorted({b["columns"][0]["metric"] for b in boards})


def _bar(p: dict[str, Any]) -> tuple[float | None, float | None]:
    if p["n"] > 1:
        return p["lo"], p["hi"]
    return p["ci_low"], p["ci_high"]


def _date(p: dict[str, Any]) -> str:
    return p["at"].strftime("%Y-%m-%d %H:%M") if p["at"] else "-"


def pages(boards: list[dict[str, Any]], points: list[dict[str, Any]],
          changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One page per board with history: a chart of its headline (a line per variant over the
    board's runs, oldest first) and the change points of its series."""
    series = _series_of(boards)
    change_at = {(c["hardware_fingerprint"], c["setting_id"], c["metric"], c["run_id"]): c
                 for c in changes}
    by_series: dict[SeriesKey, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_series[(p["hardware_fingerprint"], p["setting_id"], p["metric"])].append(p)
    per_board: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    by_id: dict[str, dict[str, Any]] = {}
    for key, mine in by_series.items():
        found = series.get(key)
        if found and len({p["run_id"] for p in mine}) > 1:
            board, name = found
            per_board[board["id"]].extend((name, p) for p in mine)
            by_id[board["id"]] = board
    return [_page(by_id[bid], mine, change_at) for bid, mine in sorted(per_board.items())]


def _page(board: dict[str, Any], mine: list[tuple[str, dict[str, Any]]],
          change_at: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    first: dict[str, dict[str, Any]] = {}  # run id -> a point of it (all share the run's start)
    for _, p in mine:
        first.setdefault(p["run_id"], p)
    runs = sorted(first, key=lambda run_id: (str(first[run_id]["at"]), run_id))
    position = {run_id: i for i, run_id in enumerate(runs)}
    newest: dict[str, int] = {}
    for name, p in mine:
        newest[name] = max(newest.get(name, -1), position[p["run_id"]])
    pts, found = [], []
    for name, p in mine:
        x = position[p["run_id"]]
        change = change_at.get((p["hardware_fingerprint"], p["setting_id"], p["metric"],
                                p["run_id"])) if change_at else None
        if change:
            found.append({**change, "label": name, "date": _date(p)})
        pts.append(_point(name, p, x, change, focus=change is not None or x == newest[name]))
    col = board["columns"][0]
    y_log = col["unit"] not in ("fraction", "") and all(pt.y > 0 for pt in pts)
    chart = {"label": col["label"], "n_series": len(newest),
             "svg": charts.lines(pts, "run (oldest first)", col["label"], x_log=False,
                                 y_log=y_log, x_names=[_date(first[r]) for r in runs])}
    return {"board": board, "charts": [chart], "n_runs": len(runs),
            "changes": sorted(found, key=lambda c: (c["date"], c["label"], c["metric"])),
            "first": _date(first[runs[0]]), "last": _date(first[runs[-1]])}


def _point(name: str, p: dict[str, Any], x: int, change: dict[str, Any] | None,
           focus: bool) -> charts.Point:
    low, high = _bar(p)
    if not focus:  # a vertex of its line; its bar joins the line's band
        return charts.Point(x=float(x), y=float(p["mean"]), label=name, tip="", y_low=low,
                            y_high=high, focus=False)
    spread = (f" range over {p['n']} seeds [{fmt(low)}–{fmt(high)}]" if p["n"] > 1 else
              f" 95% CI [{fmt(low)}–{fmt(high)}]" if low is not None else "")
    tip = (f"{name}: {fmt(p['mean'])}{spread}; run {p['run_id']}, {p['code_version']}, "
           f"{_date(p)}")
    if change:
        tip += f"; {change['change']} {100 * (change['rel_change'] or 0):+.1f}%" + \
            (" (confirmed)" if change["confirmed"] else " (unconfirmed)")
    return charts.Point(x=float(x), y=float(p["mean"]), label=name, tip=tip, y_low=low,
                        y_high=high, marked=change is not None)
