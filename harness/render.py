"""Static leaderboard site: a pure function of the database (STYLE rule 10).

``build(engine, out)`` wipes ``out``, copies static assets, renders Jinja2 templates
(autoescaped, StrictUndefined) from sorted rows, so two builds of the same data are identical.
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine

from harness import db

PACKAGE_ASSETS = Path(__file__).resolve().parent / "site_assets"  # wheel install
SOURCE_ASSETS = Path(__file__).resolve().parent.parent / "site"  # source checkout


def assets_dir() -> Path:
    for path in (PACKAGE_ASSETS, SOURCE_ASSETS):
        if (path / "templates").is_dir():
            return path
    raise FileNotFoundError("site templates not found (looked in harness/site_assets and site/)")


def fmt(value: float | None, digits: int = 3) -> str:
    """Significant-digit formatting that keeps large and small numbers readable."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 5 or magnitude <= -4:
        return f"{value:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def latest(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Newest row per (hardware, architecture, task, metric); rows come oldest first."""
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        out[(row["hardware_fingerprint"], row["arch"], row["task"], row["metric"])] = row
    return out


def headline_of(task: str, metrics: set[str]) -> str:
    try:
        import tasks

        return tasks.get(task).headline
    except KeyError:
        return sorted(metrics)[0]


def shade(column: dict[str, Any], value: float | None, floor: float | None = None) -> str | None:
    """Heat-map background for fractions where higher is better, red at the task's trivial
    floor (0 when the row has none) to green at 1; none for an unranked task."""
    if value is None or column["unit"] != "fraction" or column["higher_is_better"] is not True:
        return None
    if not column.get("ranked", True):
        return None
    low = floor if floor is not None and floor < 1 else 0.0
    frac = (value - low) / (1 - low)
    return f"hsl({round(120 * min(max(frac, 0.0), 1.0))}, 60%, 85%)"


def flags(row: dict[str, Any] | None) -> list[dict[str, str]]:
    """Marks a reader must see beside a trained row's number: not converged, not learned in
    range (length generalisation is then not what failed)."""
    extra = (row or {}).get("extra") or {}
    out = []
    if extra.get("not_converged"):
        out.append({"mark": "not converged", "why": extra.get("convergence", "")})
    if extra.get("learned_in_range") is False:
        out.append({"mark": "not learned in range",
                    "why": f"in-range accuracy {fmt(extra.get('accuracy_in_range'))} < 0.9: the "
                           "model never learned the task, so this is not a length "
                           "generalisation result"})
    return out


def baseline_note(extra: dict[str, Any]) -> str:
    """'chance 0.1; floor 0.21 (strategy); Wilson 95% [a, b]; ' for an accuracy row."""
    text = f"chance {fmt(extra['chance'])}; " if extra.get("chance") is not None else ""
    if extra.get("floor") is not None:
        text += f"floor {fmt(extra['floor'])} ({extra.get('floor_strategy', '')}); "
    if extra.get("wilson95"):
        low, high = extra["wilson95"]
        text += f"Wilson 95% interval over test items [{fmt(low)}, {fmt(high)}]; "
    return text


def training_note(facts: dict[str, Any]) -> str:
    """'LR ...; N params; T tokens; ' for a trained row (or its seed mean), else ''."""
    lrs = facts.get("chosen_lrs") or ([facts["lr"]] if "lr" in facts else [])
    if not lrs:
        return ""
    grid = facts.get("lr_grid")
    text = f"chosen LR {', '.join(f'{v:g}' for v in lrs)}"
    text += f" from grid {', '.join(f'{v:g}' for v in grid)}; " if grid else "; "
    if "num_params" in facts:
        text += f"{facts['num_params']:,} params; "
    if "token_budget" in facts:
        text += f"{facts['token_budget']:,} training tokens; "
    return text


def seed_view(row: dict[str, Any], mean: dict[str, Any]) -> dict[str, Any]:
    p = mean["points"]
    half = (p["ci_high"] - p["ci_low"]) / 2
    marks = "".join(f"{f['mark']}: {f['why']}; " for f in flags(row))
    title = (f"{marks}mean of {p['n_seeds']} seeds {p['values']}; 95% CI [{fmt(p['ci_low'])}, "
             f"{fmt(p['ci_high'])}]; {baseline_note(row.get('extra') or {})}"
             f"{training_note(p)}{row['method']}; code {row['code_version']}")
    return {"status": "ok", "text": f"{fmt(mean['value'])} ± {fmt(half)} (n={p['n_seeds']})",
            "title": title, "sort": repr(mean["value"])}


def registered_task(task: str) -> Any:
    """The registered Task of that name, or None for rows of a task no longer registered."""
    try:
        import tasks

        return tasks.get(task)
    except KeyError:
        return None


def task_kind(task: str) -> str | None:
    entry = registered_task(task)
    return None if entry is None else entry.kind


def task_ranking(task: str) -> tuple[bool, str]:
    """Whether a task's column is ranked and shaded, and if not, why."""
    entry = registered_task(task)
    return (True, "") if entry is None else (entry.ranked, entry.unranked_reason)


def leaderboards(rows: list[dict[str, Any]], hardware: dict[str, dict[str, Any]],
                 derived: list[dict[str, Any]] | None = None,
                 kind: str | None = None) -> list[dict]:
    """One board per hardware fingerprint: architectures x tasks, the headline metric each;
    where several seeds of the newest setting exist, their mean with a 95% CI. ``kind``
    keeps only that kind of task ("accuracy": the capability heat map)."""
    if kind is not None:
        rows = [r for r in rows if task_kind(r["task"]) == kind]
    newest = latest(rows)
    means = {(d["hardware_fingerprint"], d["arch"], d["task"], d["metric"], d["series"]): d
             for d in derived or [] if d["kind"] == "seed_mean"}
    metrics_by_task: dict[str, set[str]] = defaultdict(set)
    for (_, _, task, metric) in newest:
        metrics_by_task[task].add(metric)
    boards = []
    for fp in sorted({k[0] for k in newest}):
        archs = sorted({k[1] for k in newest if k[0] == fp})
        task_names = sorted({k[2] for k in newest if k[0] == fp})
        columns = []
        for task in task_names:
            metric = headline_of(task, metrics_by_task[task])
            sample = next((newest[k] for k in sorted(newest)
                           if k[0] == fp and k[2] == task and k[3] == metric), None)
            extra = (sample or {}).get("extra") or {}
            ranked, why = task_ranking(task)
            columns.append({"task": task, "metric": metric,
                            "unit": sample["unit"] if sample else "",
                            "higher_is_better": sample["higher_is_better"] if sample else None,
                            "chance": extra.get("chance"), "floor": extra.get("floor"),
                            "ranked": ranked, "unranked_reason": why})
        board_rows = []
        for arch in archs:
            views = []
            for c in columns:
                row = newest.get((fp, arch, c["task"], c["metric"]))
                mean = row and means.get((fp, arch, c["task"], c["metric"], row["config_hash"]))
                view = seed_view(row, mean) if mean and row["status"] == "ok" else cell_view(row)
                floor = ((row or {}).get("extra") or {}).get("floor")
                views.append({**view, "flags": flags(row),
                              "shade": shade(c, mean["value"] if mean else row and row["value"],
                                             floor)})
            board_rows.append({"arch": arch, "cells": views})
        boards.append({"fingerprint": fp, "hardware": hardware.get(fp, {}),
                       "columns": columns, "rows": board_rows})
    return boards


def cell_view(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"status": "not run", "text": "not run", "title": "no result", "sort": "",
                "flags": []}
    if row["status"] != "ok":
        error = (row["error"] or "").strip().splitlines()
        return {"status": row["status"], "text": row["status"],
                "title": error[-1][:300] if error else row["status"], "sort": "", "flags": []}
    spread = f" ± {fmt(row['spread'] / 2)}" if row["spread"] is not None else ""
    ci = (f"95% CI of median [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]; "
          if row["ci_low"] is not None else "")
    extra = row.get("extra") or {}
    marks = "".join(f"{f['mark']}: {f['why']}; " for f in flags(row))
    title = (f"{marks}{ci}IQR {fmt(row['spread'])}; n={row['n_samples']}; "
             f"{baseline_note(extra)}{training_note(extra)}method: {row['method']}; "
             f"kernel: {row['kernel_path'] or '-'}; {row['device']} {row['dtype']} "
             f"{row['threads']} threads; code {row['code_version']}")
    return {"status": "ok", "text": fmt(row["value"]) + spread, "title": title,
            "sort": repr(row["value"]), "flags": flags(row)}


def arch_pages(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    newest = latest(rows)
    pages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in sorted(newest):
        row = newest[key]
        pages[row["arch"]].append({**row, "shown": cell_view(row)})
    return dict(pages)


def arch_info(name: str) -> dict[str, Any]:
    try:
        from harness.catalog import architecture_entry

        return architecture_entry(name)
    except KeyError:
        return {"name": name, "family": "unregistered", "version": "-", "papers": [], "doc": ""}


def scaling_boards(rows: list[dict[str, Any]], derived: list[dict[str, Any]],
                   hardware: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sweep group: a log-log plot, the exponents and the crossover lengths."""
    from harness.derive import sweep_series
    from harness.plots import loglog

    boards = []
    for (fp, task, metric, series, key), by_arch in sorted(sweep_series(rows).items()):
        if max(len(p) for p in by_arch.values()) < 2:
            continue
        mine = [d for d in derived if d["hardware_fingerprint"] == fp and d["task"] == task
                and d["metric"] == metric and d["series"] == series]
        unit = next((r["unit"] for r in rows if r["task"] == task and r["metric"] == metric), "")
        boards.append({
            "fingerprint": fp, "hardware": hardware.get(fp, {}), "task": task, "metric": metric,
            "key": key, "svg": loglog(by_arch, key, f"{metric} ({unit})"),
            "exponents": [d for d in mine if d["kind"] == "scaling_exponent"],
            "crossovers": [d for d in mine if d["kind"] == "crossover_length"],
        })
    return boards


def achieved_rows(derived: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (hardware, variant, shape): achieved FLOP/s and its fraction of peak."""
    table: dict[tuple, dict[str, Any]] = {}
    for d in derived:
        if d["kind"] in ("achieved_flops_per_s", "fraction_of_peak"):
            p = d["points"]
            key = (d["hardware_fingerprint"], d["arch"], p["seq_len"], p["batch_size"])
            table.setdefault(key, {"fingerprint": key[0], "arch": key[1], "seq_len": key[2],
                                   "batch_size": key[3], "fraction_of_peak": None})
            table[key][d["kind"]] = d["value"]
    return [table[k] for k in sorted(table, key=str)]


def build(engine: Engine, out: Path) -> Path:
    """Render the site into ``out`` (wiped first); returns the index path."""
    assets = assets_dir()
    rows = db.results(engine)
    hardware = db.hardware(engine)
    env = Environment(loader=FileSystemLoader(assets / "templates"), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(assets / "static", out / "static")
    pages = arch_pages(rows)
    index = out / "index.html"
    derived = db.derived(engine)
    index.write_text(env.get_template("index.html").render(
        boards=leaderboards(rows, hardware, derived), n_results=len(rows), root=".",
        archs=sorted(pages)))
    (out / "capability.html").write_text(env.get_template("capability.html").render(
        boards=leaderboards(rows, hardware, derived, kind="accuracy"), root="."))
    (out / "scaling.html").write_text(env.get_template("scaling.html").render(
        boards=scaling_boards(rows, derived, hardware), achieved=achieved_rows(derived),
        root="."))
    (out / "arch").mkdir()
    for name, arch_rows in sorted(pages.items()):
        (out / "arch" / f"{name}.html").write_text(env.get_template("arch.html").render(
            info=arch_info(name), rows=arch_rows, hardware=hardware, root=".."))
    return index
