"""What each page of the site shows, as plain data for the templates (``harness.render``).

Board cells (``cell``): a figure with its CI or spread, and its marks as visible badges;
variant, task, machine and claims pages; board CSV files (the charts: ``harness.figures``).
Everything from the database (rows, runs, the stored catalog), nothing from the registries.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from harness import boards as boards_mod
from harness.cells import (
    baseline_note,
    cell_view,
    ci_text,
    flags,
    fmt,
    ref_view,
    shade,
    training_note,
)
from harness.export import FORMULA_STARTS
from harness.seeds import mean_ci

# Every mark a cell may carry, in legend order: (kind, what it tells the reader).
MARK_DOCS = {
    "noisy": "the timing samples spread widely (IQR / median above the threshold): compare "
             "this figure with care.",
    "contended": "other processes used the CPU while this figure was timed; the cell's "
                 "details list the figures recorded (load, steal, their CPU share).",
    "CI target missed": "sampling stopped at its cap before the CI of the median was as tight "
                        "as its target.",
    "not converged": "training was still improving on validation when its step budget ran out.",
    "not learned in range": "a length-generalisation model never learned the task at the "
                            "trained lengths.",
    "failed": "the measurement crashed; the details give the last line of its error.",
    "unavailable": "this machine cannot take the measurement (no meter, no GPU, ...).",
    "unsupported": "the variant does not support this task or setting.",
    "timeout": "the measurement ran past its time limit.",
    "oom": "the measurement ran out of memory.",
    "not run": "no result for this variant in this setting.",
}
STATUS_KIND = "status"
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
ARXIV = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5}(?:v\d+)?)", re.IGNORECASE)
URL = re.compile(r"https?://[^\s<>\"')]+")


def markdown(text: str | None) -> Markup:
    """CommonMark with raw HTML disabled (shown escaped) and unsafe link schemes refused."""
    return Markup(_md.render(text or ""))


def paper_link(paper: Any) -> dict[str, str]:
    """A stored paper string as {text, url}: its URL, an arXiv id's abstract page, or none."""
    text = paper if isinstance(paper, str) else str(paper)
    url = URL.search(text)
    if url:
        return {"text": text, "url": url.group(0)}
    arxiv = ARXIV.search(text)
    return {"text": text, "url": f"https://arxiv.org/abs/{arxiv.group(1)}" if arxiv else ""}


def _marks(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The marks of a cell's rows, once each: trust marks, then non-ok statuses (with how many
    seeds, where only some)."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        for f in flags(row):
            out.setdefault(f["mark"], f)
    bad = defaultdict(list)
    for row in rows:
        if row["status"] != "ok":
            bad[row["status"]].append(row)
    for status, mine in sorted(bad.items()):
        error = (mine[-1].get("error") or "").strip().splitlines()
        some = f" ({len(mine)} of {len(rows)} seeds)" if len(mine) < len(rows) else ""
        out.setdefault(status, {"mark": status + some, "kind": STATUS_KIND, "key": status,
                                "why": error[-1][:300] if error else status})
    return [{"key": f.get("key", f["mark"]), **f} for f in out.values()]


def cell(rows: list[dict[str, Any]], column: dict[str, Any]) -> dict[str, Any]:
    """One board cell from its rows (one per seed, newest version): the mean ± half its 95% CI
    over seeds, or one row's figure with its CI (timed) or spread, or its status; with its
    HTML (``cell_html``), written once and shown on every page that has the cell."""
    view = _cell(rows, column)
    view["attrs"], view["html"] = cell_html(view)
    return view


def cell_html(c: dict[str, Any]) -> tuple[Markup, Markup]:
    """A cell's ``<td>`` attributes and content (what ``_board.html``'s ``cell_td`` wraps):
    the figure, best badge, CI, reference ratio, mark badges and the details to open."""
    cls = "status-" + c["status"].replace(" ", "-") + (" best" if c["best"] else "")
    attrs = f'class="{escape(cls)}" data-sort="{escape(c["sort"])}"'
    if c["shade"]:
        attrs += f' style="background: {escape(c["shade"])}"'
    out = [f'<span class="val">{escape(c["text"])}</span>' if c["status"] == "ok" else ""]
    if c["best"]:
        out.append(' <span class="badge badge-best">best</span>')
    if c["ci"]:
        out.append(f'<br><span class="ci">{escape(c["ci"])}</span>')
    if c["ref"]:
        out.append(f' <span class="ref">{escape(c["ref"]["text"])}</span>')
    out += [f'<br><span class="badge badge-{escape(m["kind"])}">{escape(m["mark"])}</span>'
            for m in c["marks"]]
    if c["detail"]:
        out.append(f'<details><summary>details</summary><small>{escape(c["detail"])}</small>'
                   '</details>')
    return Markup(attrs), Markup("".join(out))


def finish_boards(all_boards: list[dict[str, Any]]) -> None:
    """Write again the HTML of the cells ranking marked best after ``cell`` wrote it; write
    each board's setting line once for every page that shows it."""
    for b in all_boards:
        b["setting_html"] = Markup('<span class="setting">' + "".join(
            f'<span class="kv">{escape(k)} <b>{escape(v)}</b></span> ' for k, v in b["setting"])
            + "</span>")
        for r in b["rows"]:
            for c in r["cells"]:
                if c["best"]:
                    c["attrs"], c["html"] = cell_html(c)


def _cell(rows: list[dict[str, Any]], column: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"value": None, "low": None, "high": None, "n": len(rows),
                            "best": False, "ci": "", "ref": None, "shade": None,
                            "params": None, "sort": "", "marks": _marks(rows)}
    ok = [r for r in rows if r["status"] == "ok" and r["value"] is not None]
    if not rows:
        return {**view, "status": "not run", "text": "not run", "detail": "",
                "marks": [{"key": "not run", "mark": "not run", "kind": STATUS_KIND,
                           "why": "no result"}]}
    newest = max(rows, key=lambda r: r["id"])
    extra = newest.get("extra") or {}
    params = next((r["extra"]["num_params"] for r in ok
                   if isinstance((r.get("extra") or {}).get("num_params"), (int, float))),
                  None)
    view["params"] = params
    if len(ok) >= 2:
        values = [r["value"] for r in ok]
        mean, low, high = seed_ci(values)
        detail = (f"mean of {len(ok)} seeds {[round(v, 6) for v in values]}; 95% CI (Student "
                  f"t) [{fmt(low)}, {fmt(high)}]; {baseline_note(extra)}"
                  f"{training_note(extra)}method {newest['method']}; code "
                  f"{newest['code_version']}")
        view.update(status="ok", value=mean, low=low, high=high,
                    text=f"{fmt(mean)} ± {fmt((high - low) / 2)} (n={len(ok)})",
                    ci=f"95% CI [{fmt(low)}–{fmt(high)}]", detail=detail)
    elif ok:
        row = ok[0]
        shown = cell_view(row)
        text = shown["text"]
        ci = shown["ci"]
        if row["unit"] == "fraction" and (row.get("extra") or {}).get("wilson95"):
            low, high = row["extra"]["wilson95"]
            ci = f"Wilson [{fmt(low)}–{fmt(high)}]"
            view.update(low=low, high=high)
        elif row.get("ci_low") is not None:
            view.update(low=row["ci_low"], high=row["ci_high"])
            ci = ci or ci_text(row)
        elif not ci and row.get("spread") is None:
            ci = f"n={row['n_samples']}, no spread"
        view.update(status="ok", value=row["value"], text=text, ci=ci, ref=ref_view(row),
                    detail=shown["title"])
    else:
        error = (newest.get("error") or "").strip().splitlines()
        view.update(status=newest["status"], text=newest["status"],
                    detail=error[-1][:300] if error else newest["status"])
    floor = extra.get("floor")
    view["shade"] = shade(column, view["value"], floor)
    view["sort"] = "" if view["value"] is None else repr(view["value"])
    return view


def seed_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values: ``seeds.mean_ci`` at 95% for two or more, the
    value itself for one, NaN for none."""
    xs = [v for v in values if math.isfinite(v)]
    ci = mean_ci(xs) if len(xs) >= 2 else None
    if ci is not None:
        return ci
    return (xs[0], xs[0], xs[0]) if xs else (math.nan, math.nan, math.nan)


def legend(boards: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The marks the page's boards carry, in legend order, with what each tells."""
    used = {m["key"] for b in boards for r in b["rows"] for c in r["cells"] for m in c["marks"]}
    out = [{"mark": k, "kind": _kind(k), "doc": d} for k, d in MARK_DOCS.items() if k in used]
    out += [{"mark": k, "kind": STATUS_KIND, "doc": "a measurement with this status."}
            for k in sorted(used - set(MARK_DOCS))]
    return out


def _kind(mark: str) -> str:
    return {"noisy": "noisy", "contended": "contended", "CI target missed": "ci",
            "not converged": "training", "not learned in range": "training"}.get(mark,
                                                                                 STATUS_KIND)


# --- CSV -------------------------------------------------------------------------------------


def _csv_cell(value: Any) -> Any:
    """None as empty; text a spreadsheet would run as a formula prefixed with a quote."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def board_csv(board: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["rank", "variant", "arch_config"]
    for c in board["columns"]:
        m = c["metric"]
        head += [m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_n", f"{m}_status", f"{m}_marks"]
    writer.writerow(head)
    for r in board["rows"]:
        line = [r["rank"], r["arch"], r["arch_config_text"]]
        for c in r["cells"]:
            line += [c["value"], c["low"], c["high"], c["n"], c["status"],
                     "; ".join(m["mark"] for m in c["marks"])]
        writer.writerow([_csv_cell(v) for v in line])
    return out.getvalue()


# --- pages -----------------------------------------------------------------------------------


def variant_info(name: str, catalog: dict[str, Any]) -> dict[str, Any]:
    info = catalog["architectures"].get(name)
    if info is None:
        return {"name": name, "family": "not in the stored catalog", "version": "-",
                "papers": [], "doc_html": Markup(""), "causal": None, "known": False}
    return {**info, "papers": [paper_link(p) for p in info.get("papers") or []],
            "doc_html": markdown(info.get("doc")), "known": True}


def task_info(name: str, catalog: dict[str, Any], task_boards: list[dict[str, Any]],
              rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored task entry (or a plain one) with the chance, floor and floor strategy its
    rows recorded."""
    info = catalog["tasks"].get(name) or {"name": name, "kind": None, "version": "-",
                                          "doc": "", "metrics": [], "headline": None}
    baselines = set()
    for row in rows:
        extra = row.get("extra") or {}
        if extra.get("chance") is not None or extra.get("floor") is not None:
            baselines.add((fmt(extra.get("chance")), fmt(extra.get("floor")),
                           str(extra.get("floor_strategy") or "")))
    return {**info, "doc_html": markdown(info.get("doc")), "baselines": sorted(baselines),
            "known": name in catalog["tasks"]}


def variant_boards(name: str, all_boards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each board the variant appears on, with only its lines, grouped by task order."""
    return [{**b, "n_lines": len(b["rows"]), "rows": [r for r in b["rows"] if r["arch"] == name]}
            for b in all_boards if any(r["arch"] == name for r in b["rows"])]


EVIDENCE_FIRST = ("used", "kind", "arch", "metric", "value", "unit", "ci_low", "ci_high",
                  "seed", "status", "task_config", "arch_config", "run_id", "suite")


def evidence_table(evidence: list[dict[str, Any]]) -> dict[str, Any]:
    """The evidence rows as a table: the telling columns first, columns empty in every row
    left out."""
    keys = {k for e in evidence for k in e if _text(e.get(k)) != ""}
    order = [k for k in EVIDENCE_FIRST if k in keys] + sorted(keys - set(EVIDENCE_FIRST))
    return {"columns": order, "lines": [[_text(e.get(k)) for k in order] for e in evidence]}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, (dict, list)):
        return boards_mod.canon(value)
    return "" if value is None else str(value)


def facts(mapping: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), _text(v)) for k, v in sorted((mapping or {}).items(), key=lambda kv:
                                                  str(kv[0]))]
