"""Static leaderboard site: a pure function of the database (STYLE rule 10).

Pages: the index (boards per machine, ``harness.boards``), a page per task, variant and machine,
the claims, scaling and changes pages; each board's rows as a CSV file. Metadata comes from the
stored catalog (``db.catalog``), never from the registries.

``build(engine, out)`` renders Jinja2 templates (autoescaped, StrictUndefined) from sorted rows
into a fresh folder beside ``out``, then swaps it in, so two builds of the same data are identical
and a failed build never leaves half a site. It replaces only an empty folder or an earlier
build (marked by ``.archbench-site``); never a folder holding a database, the working directory,
one of its parents, or the home folder. File names come from ``slug``, never raw names.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from sqlalchemy.engine import Engine

from harness import boards as boards_mod
from harness import claims, db, figures, heatmap, history, pages, queries
from harness.cells import (  # noqa: F401 - re-exported: site callers name them here
    TIMED_UNITS,
    baseline_note,
    cell_view,
    ci_text,
    contention_note,
    flags,
    fmt,
    is_timed,
    ref_view,
    seed_view,
    shade,
    timing_flags,
    training_note,
)
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
from tasks.instruments.stats import NOISY_IQR_OVER_MEDIAN

PACKAGE_ASSETS = Path(__file__).resolve().parent / "site_assets"  # wheel install
SOURCE_ASSETS = Path(__file__).resolve().parent.parent / "site"  # source checkout


def assets_dir() -> Path:
    for path in (PACKAGE_ASSETS, SOURCE_ASSETS):
        if (path / "templates").is_dir():
            return path
    raise FileNotFoundError("site templates not found (looked in harness/site_assets and site/)")


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


def environment(assets: Path) -> Environment:
    env = Environment(loader=FileSystemLoader(assets / "templates"), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["fmt"] = fmt
    env.filters["slug"] = slug
    env.globals["noisy_threshold"] = f"{NOISY_IQR_OVER_MEDIAN:.0%}"
    return env


def machine_links(assets: Path, files: dict[str, dict[str, str]], hardware: dict[str, Any],
                  fingerprints: list[str]) -> dict[str, dict[str, Markup]]:
    """root -> fingerprint -> the machine's link, rendered once per page depth (by an
    environment of its own: Jinja keeps a template's globals from its first use)."""
    env = environment(assets)
    env.globals.update(files=files, hardware=hardware)
    links = env.get_template("_hardware.html").module
    return {root: {fp: Markup(links.machine_link_html(fp, root)) for fp in fingerprints}
            for root in (".", "..")}


def _write(out: Path, parts: tuple[str, ...], text: str) -> None:
    inside(out, *parts).write_text(text, encoding="utf-8")


def render_into(engine: Engine, out: Path, assets: Path) -> None:
    """Write every page of the site into the empty folder ``out``.

    Reads only what the pages show (``harness.queries``): per setting, metric and seed the
    newest rows without their samples, the runs, the stored catalog, hardware and peaks."""
    rows = queries.board_rows(engine)
    runs = queries.run_facts(engine)
    catalog = db.catalog(engine)
    hardware = db.hardware(engine)
    derived = db.derived(engine)
    boards = boards_mod.build_boards(rows, runs, catalog, pages.cell)
    pages.finish_boards(boards)
    env = environment(assets)
    shutil.copytree(assets / "static", inside(out, "static"))
    names = {"arch": sorted({r["arch"] for r in rows} | set(catalog["architectures"])),
             "task": sorted({r["task"] for r in rows}),
             "machine": sorted({r["hardware_fingerprint"] for r in rows} | set(hardware))}
    files = {kind: unique_slugs(dict.fromkeys(n)) for kind, n in names.items()}
    changes = db.change_points(engine)
    histories = history.pages(boards, queries.history_points(engine, history.metrics(boards)),
                              changes)
    env.globals.update(files=files, hardware=hardware,
                       history_ids={h["board"]["id"] for h in histories})
    env.globals["machine_html"] = machine_links(assets, files, hardware, names["machine"])
    _index(env, out, boards, hardware, queries.count_results(engine))
    heatmap.write(env, out, boards)
    _csvs(out, boards)
    scaling = {task: figures.scaling_charts([b for b in boards if b["task"] == task])
               for task in names["task"]}
    _task_pages(env, out, boards, rows, catalog, scaling, names["task"], files["task"])
    _variant_pages(env, out, boards, catalog, scaling, names["arch"], files["arch"])
    volatile = queries.newest_volatile(engine, names["machine"])
    _machine_pages(env, out, boards, hardware, db.peaks(engine), volatile,
                   names["machine"], files["machine"])
    verdicts = claims.evaluate(engine, rows=[{**r, "suite": (runs.get(r["run_id"]) or {})
                                              .get("suite")} for r in rows])
    _write(out, ("claims.html",), env.get_template("claims.html").render(
        root=".", verdicts=[{"v": v, "evidence": pages.evidence_table(v.evidence)}
                            for v in verdicts]))
    _write(out, ("changes.html",), env.get_template("changes.html").render(
        root=".", changes=changes))
    _history_pages(env, out, histories)
    _write(out, ("scaling.html",), env.get_template("scaling.html").render(
        sweeps=figures.scaling_page(boards, derived), achieved=achieved_rows(derived),
        legend=pages.legend(boards), root="."))


def _filters(boards: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {"machine": sorted({b["fingerprint"] for b in boards}),
            "dtype": sorted({b["dtype"] for b in boards}),
            "size": sorted({b["budget_text"] for b in boards})}


def _index(env: Environment, out: Path, boards: list[dict[str, Any]],
           hardware: dict[str, Any], n_results: int) -> None:
    machines = sorted({b["fingerprint"] for b in boards})
    overview = {o["fingerprint"]: o for o in heatmap.overview_sections(boards)}
    sections = [{"fingerprint": fp, "boards": [b for b in boards if b["fingerprint"] == fp],
                 "overview": overview[fp]} for fp in machines]
    _write(out, ("index.html",), env.get_template("index.html").render(
        root=".", sections=sections, n_results=n_results, legend=pages.legend(boards),
        filters=_filters(boards)))


def _csvs(out: Path, boards: list[dict[str, Any]]) -> None:
    inside(out, "csv").mkdir()
    for b in boards:
        _write(out, ("csv", f"{b['id']}.csv"), pages.board_csv(b))


def _task_pages(env: Environment, out: Path, boards: list[dict[str, Any]],
                rows: list[dict[str, Any]], catalog: dict[str, Any],
                scaling: dict[str, list[dict[str, Any]]], names: list[str],
                files: dict[str, str]) -> None:
    inside(out, "task").mkdir()
    rows_by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        rows_by_task[row["task"]].append(row)
    template = env.get_template("task.html")
    for name in names:
        mine = [b for b in boards if b["task"] == name]
        charts = [{"board": b, "svgs": figures.pareto_charts(b, boards)}
                  for b in mine if b["kind"] == "accuracy"]
        _write(out, ("task", f"{files[name]}.html"), template.render(
            root="..", info=pages.task_info(name, catalog, mine, rows_by_task[name]),
            boards=mine, pareto=[c for c in charts if c["svgs"]],
            scaling=scaling[name], legend=pages.legend(mine),
            filters=_filters(mine)))


def _variant_pages(env: Environment, out: Path, boards: list[dict[str, Any]],
                   catalog: dict[str, Any], scaling: dict[str, list[dict[str, Any]]],
                   names: list[str], files: dict[str, str]) -> None:
    inside(out, "arch").mkdir()
    template = env.get_template("arch.html")
    for name in names:
        mine = pages.variant_boards(name, boards)
        _write(out, ("arch", f"{files[name]}.html"), template.render(
            root="..", info=pages.variant_info(name, catalog), boards=mine,
            scaling={task: [c for c in charts if figures.in_sweep(name, c["sweep"])]
                     for task, charts in scaling.items()},
            legend=pages.legend(mine), filters=_filters(mine)))


def _machine_pages(env: Environment, out: Path, boards: list[dict[str, Any]],
                   hardware: dict[str, Any], peaks: dict[tuple, float],
                   volatile: dict[str, dict[str, Any]], names: list[str],
                   files: dict[str, str]) -> None:
    inside(out, "machine").mkdir()
    template = env.get_template("machine.html")
    for fp in names:
        mine = [b for b in boards if b["fingerprint"] == fp]
        _write(out, ("machine", f"{files[fp]}.html"), template.render(
            root="..", fingerprint=fp, stable=pages.facts(hardware.get(fp)),
            peaks=sorted((k[1], k[2], k[3], v) for k, v in peaks.items() if k[0] == fp),
            volatile=pages.facts((volatile.get(fp) or {}).get("volatile")),
            volatile_run=(volatile.get(fp) or {}).get("run_id"), boards=mine))


def _history_pages(env: Environment, out: Path, pages_: list[dict[str, Any]]) -> None:
    inside(out, "history").mkdir()
    template = env.get_template("history.html")
    for page in pages_:
        bid = page["board"]["id"]
        _write(out, ("history", f"{bid}.html"), template.render(root="..", page=page))
