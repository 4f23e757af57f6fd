"""Static leaderboard site: a pure function of the database (STYLE rule 10).

``build(engine, out)`` renders Jinja2 templates (autoescaped, StrictUndefined) from sorted rows
into a fresh folder beside ``out``, then swaps it in, so two builds of the same data are identical
and a failed build never leaves half a site. It replaces only an empty folder or an earlier
build (marked by ``.archbench-site``); never a folder holding a database, the working directory,
one of its parents, or the home folder. File names come from ``slug``, never raw names.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.engine import Engine

from harness import db, queries
from harness.outputs import (  # noqa: F401 - re-exported: site callers name them here
    MARKER_TEXT,
    SITE_MARKER,
    OutputError,
    _fresh_sibling,
    _swap_in,
    check_file_out,
    check_site_out,
    database_path,
    inside,
    slug,
    unique_slugs,
)
from harness.stats import NOISY_IQR_OVER_MEDIAN

TIMED_UNITS = frozenset({"ms", "tokens/s", "x reference"})


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
    """Marks a reader must see beside a row's number: for a trained row not converged, not
    learned in range (length generalisation is then not what failed); for a timed row noisy,
    contended, CI target missed (``timing_flags``)."""
    extra = (row or {}).get("extra") or {}
    out = []
    if extra.get("not_converged"):
        out.append({"mark": "not converged", "kind": "training",
                    "why": extra.get("convergence", "")})
    if extra.get("learned_in_range") is False:
        out.append({"mark": "not learned in range", "kind": "training",
                    "why": f"in-range accuracy {fmt(extra.get('accuracy_in_range'))} < 0.9: the "
                           "model never learned the task, so this is not a length "
                           "generalisation result"})
    if row is not None and row["status"] == "ok":
        out.extend(timing_flags(row))
    return out


def is_timed(row: dict[str, Any]) -> bool:
    """A latency or throughput figure: it is shown with its CI and its trust marks."""
    return row["unit"] in TIMED_UNITS or "noisy" in (row.get("extra") or {})


def _plain(value: Any) -> str:
    """A stored fact as short text: numbers through ``fmt``, containers as sorted JSON."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, (int, float)):
        return fmt(float(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _relative(part: float | None, whole: float | None) -> str:
    """'12%' for part / whole, '' when either is missing or whole is 0."""
    if part is None or whole is None or whole == 0:
        return ""
    return f"{abs(part / whole):.0%}"


CONTENTION_FIGURES = ("others_cpu_cores", "others_beyond_free_cores", "steal_fraction",
                      "throttled_fraction", "load_avg_after", "score")


def contention_note(contention: Any) -> str:
    """The figures behind a contended mark, short enough for a tooltip: the kept attempt's
    rule hits ('reasons') and figures (``harness.contention``) and how many attempts were
    made; a flat dict of other figures is listed as it is."""
    if not isinstance(contention, dict):
        return _plain(contention) if contention else ""
    processes = contention.get("processes")
    if isinstance(processes, list):  # pooled over fresh processes: each one's own note
        notes = [f"process {i + 1}: {contention_note(p.get('contention'))}"
                 for i, p in enumerate(processes)
                 if isinstance(p, dict) and p.get("contended")]
        return "; ".join(notes) or f"{len(processes)} processes, none contended"
    attempts, kept = contention.get("attempts"), contention.get("kept_attempt")
    figures = contention
    if isinstance(attempts, list) and isinstance(kept, int) and 0 <= kept < len(attempts) \
            and isinstance(attempts[kept], dict):
        figures = attempts[kept]
    parts = [str(r) for r in figures.get("reasons") or []]
    known = [k for k in CONTENTION_FIGURES if figures.get(k) is not None]
    if figures is contention and not known and not parts:
        known = sorted(k for k, v in contention.items()
                       if isinstance(v, (int, float, str)) and not isinstance(v, bool))
    parts += [f"{k} {_plain(figures[k])}" for k in known]
    if isinstance(contention.get("n_attempts"), int) and isinstance(kept, int):
        parts.append(f"kept attempt {kept + 1} of {contention['n_attempts']}"
                     + (f" ({contention['stop_reason']})" if contention.get("stop_reason")
                        else ""))
    return "; ".join(parts)


def timing_flags(row: dict[str, Any]) -> list[dict[str, str]]:
    """noisy (IQR/median above the threshold), contended (other processes used the CPU while
    it was timed; the recorded figures go in the title), CI target missed (``ci_met`` false:
    the CI half-width stayed above ``ci_target`` x median, harness.timing)."""
    extra = row.get("extra") or {}
    out = []
    if extra.get("noisy"):
        rel = _relative(row.get("spread"), row.get("value"))
        out.append({"mark": "noisy", "kind": "noisy",
                    "why": f"noisy: IQR/median {rel + ' ' if rel else ''}> "
                           f"{NOISY_IQR_OVER_MEDIAN:.0%}: the timing samples spread widely, "
                           "so compare this figure with care"})
    if extra.get("contended"):
        facts = contention_note(extra.get("contention"))
        out.append({"mark": "contended", "kind": "contended",
                    "why": "contended: other processes used the CPU while this was timed"
                           + (f" ({facts})" if facts else "")})
    if extra.get("ci_met") is False:
        target = extra.get("ci_target")
        half = (None if row.get("ci_low") is None or row.get("ci_high") is None
                else (row["ci_high"] - row["ci_low"]) / 2)
        rel = _relative(half, row.get("value"))
        goal = (f" of ± {target:.0%} of the median"
                if isinstance(target, (int, float)) and not isinstance(target, bool)
                else (f" ({_plain(target)})" if target is not None else ""))
        out.append({"mark": "CI target missed", "kind": "ci",
                    "why": "CI target missed: sampling stopped at its cap before the 95% CI of "
                           f"the median reached its target{goal}"
                           + (f"; achieved ± {rel} of the median" if rel else "")})
    return out


def ci_text(row: dict[str, Any]) -> str:
    """'[3.90–4.60]' (95% CI of the median) for a timed row, 'no CI (n=5)' without one."""
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        return f"[{fmt(row['ci_low'])}–{fmt(row['ci_high'])}]"
    return f"no CI (n={row['n_samples']})"


def ref_view(row: dict[str, Any]) -> dict[str, str] | None:
    """'1.8x ref' beside a latency in ms whose row stored the reference-normalised ratio."""
    extra = row.get("extra") or {}
    ratio = extra.get("ref_ratio")
    if row["unit"] != "ms" or not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        return None
    ref = extra.get("ref_ms")
    timed = f" ({fmt(float(ref))} ms)" if isinstance(ref, (int, float)) else ""
    return {"text": f"{fmt(float(ratio), 2)}x ref",
            "why": f"{fmt(float(ratio))} x the latency of a fixed reference workload{timed} "
                   "timed in the same rounds: moves less with machine load than the raw ms"}


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
            "title": title, "sort": repr(mean["value"]), "ci": "", "ref": None}


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
    first_arch: dict[tuple[str, str, str], dict[str, Any]] = {}  # the sample of a column
    for k in sorted(newest):
        first_arch.setdefault((k[0], k[2], k[3]), newest[k])
    boards = []
    for fp in sorted({k[0] for k in newest}):
        archs = sorted({k[1] for k in newest if k[0] == fp})
        task_names = sorted({k[2] for k in newest if k[0] == fp})
        columns = []
        for task in task_names:
            metric = headline_of(task, metrics_by_task[task])
            sample = first_arch.get((fp, task, metric))
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
    """Text, tooltip, sort key and marks of one row; a timed row shows value, unit and CI."""
    if row is None:
        return {"status": "not run", "text": "not run", "title": "no result", "sort": "",
                "flags": [], "ci": "", "ref": None}
    if row["status"] != "ok":
        error = (row["error"] or "").strip().splitlines()
        return {"status": row["status"], "text": row["status"],
                "title": error[-1][:300] if error else row["status"], "sort": "", "flags": [],
                "ci": "", "ref": None}
    ci = (f"95% CI of median [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]; "
          if row["ci_low"] is not None else "")
    extra = row.get("extra") or {}
    marks = "".join(f"{f['mark']}: {f['why']}; " for f in flags(row))
    ref = ref_view(row)
    title = (f"{marks}{ci}IQR {fmt(row['spread'])}; n={row['n_samples']}; "
             f"{ref['why'] + '; ' if ref else ''}"
             f"{baseline_note(extra)}{training_note(extra)}method: {row['method']}; "
             f"kernel: {row['kernel_path'] or '-'}; {row['device']} {row['dtype']} "
             f"{row['threads']} threads; code {row['code_version']}")
    if is_timed(row):
        text, shown_ci = f"{fmt(row['value'])} {row['unit']}", ci_text(row)
    else:
        spread = f" ± {fmt(row['spread'] / 2)}" if row["spread"] is not None else ""
        text, shown_ci = fmt(row["value"]) + spread, ""
    return {"status": "ok", "text": text, "title": title, "sort": repr(row["value"]),
            "flags": flags(row), "ci": shown_ci, "ref": ref}


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
                   hardware: dict[str, dict[str, Any]],
                   units: dict[tuple[str, str], str] | None = None) -> list[dict[str, Any]]:
    """Per sweep group: a log-log plot, the exponents and the crossover lengths.

    ``rows``: every result row oldest first, or just the newest ``ok`` sweep rows
    (``queries.sweep_rows``) with ``units``, (task, metric) -> unit of the oldest row of each
    (``queries.first_units``); without ``units`` they are looked up in ``rows``."""
    from harness.derive import sweep_series
    from harness.plots import loglog

    marked = marked_points(rows)
    by_series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for d in derived:
        by_series[(d["hardware_fingerprint"], d["task"], d["metric"], d["series"])].append(d)
    boards = []
    for (fp, task, metric, series, key), by_arch in sorted(sweep_series(rows).items()):
        if max(len(p) for p in by_arch.values()) < 2:
            continue
        mine = by_series.get((fp, task, metric, series), [])
        if units is not None:
            unit = units.get((task, metric), "")
        else:
            unit = next((r["unit"] for r in rows if r["task"] == task and r["metric"] == metric),
                        "")
        boards.append({
            "fingerprint": fp, "hardware": hardware.get(fp, {}), "task": task, "metric": metric,
            "key": key, "svg": loglog(by_arch, key, f"{metric} ({unit})"),
            "exponents": [d for d in mine if d["kind"] == "scaling_exponent"],
            "crossovers": [d for d in mine if d["kind"] == "crossover_length"],
            "marked": marked.get((fp, task, metric, series, key), []),
        })
    return boards


def marked_points(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Sweep group -> the plotted points whose newest row carries a timing mark, with its CI:
    a plot cannot show them, so the page lists them under it."""
    from harness.derive import sweep_series

    newest: dict[tuple, dict[tuple[str, int], dict[str, Any]]] = defaultdict(dict)
    for row in rows:  # oldest first, as sweep_series reads them, so newer rows overwrite
        for group, by_arch in sweep_series([row]).items():
            for arch, points in by_arch.items():
                for x in points:
                    newest[group][(arch, x)] = row
    out: dict[tuple, list[dict[str, Any]]] = {}
    for group, points in newest.items():
        views = [{"arch": arch, "x": x, **cell_view(row)}
                 for (arch, x), row in sorted(points.items()) if timing_flags(row)]
        if views:
            out[group] = views
    return out


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
    """Render the site into ``out``, replacing an earlier build there; returns the index path.

    Raises OutputError, before any work and with nothing deleted, where ``out`` may not be
    replaced (``check_site_out``)."""
    out = Path(out)
    assets = assets_dir()
    check_site_out(out, database_path(engine), assets)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = _fresh_sibling(out, "building")
        staging.mkdir()
    except OSError as e:
        raise OutputError(f"{out}: cannot create the site beside it ({e.strerror})") from None
    try:
        render_into(engine, staging, assets)
        (staging / SITE_MARKER).write_text(MARKER_TEXT)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, out)
    return out / "index.html"


def render_into(engine: Engine, out: Path, assets: Path) -> None:
    """Write every page of the site into the empty folder ``out``.

    Reads only what the pages show (``harness.queries``): the newest row per (hardware,
    architecture, task, metric) and the newest ``ok`` sweep points, without their samples."""
    from harness.derive import SWEPT_METRICS

    rows = queries.latest_rows(engine)  # newest per (hardware, arch, task, metric), no samples
    hardware = db.hardware(engine)
    env = Environment(loader=FileSystemLoader(assets / "templates"), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["slug"] = slug
    env.globals["noisy_threshold"] = f"{NOISY_IQR_OVER_MEDIAN:.0%}"
    shutil.copytree(assets / "static", inside(out, "static"))
    pages = arch_pages(rows)
    files = unique_slugs(pages)
    derived = db.derived(engine)
    inside(out, "index.html").write_text(env.get_template("index.html").render(
        boards=leaderboards(rows, hardware, derived), n_results=queries.count_results(engine),
        root=".", archs=sorted(pages)))
    inside(out, "capability.html").write_text(env.get_template("capability.html").render(
        boards=leaderboards(rows, hardware, derived, kind="accuracy"), root="."))
    inside(out, "scaling.html").write_text(env.get_template("scaling.html").render(
        boards=scaling_boards(queries.sweep_rows(engine, SWEPT_METRICS, queries.columns_except()),
                              derived, hardware, queries.first_units(engine)),
        achieved=achieved_rows(derived),
        root="."))
    inside(out, "arch").mkdir()
    for name, arch_rows in sorted(pages.items()):
        inside(out, "arch", f"{files[name]}.html").write_text(
            env.get_template("arch.html").render(info=arch_info(name), rows=arch_rows,
                                                 hardware=hardware, root=".."))


