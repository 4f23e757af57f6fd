"""The capability heat map states what a score means: a column per accuracy board (never two
settings in one column) with the chance and floor its rows recorded, shading from the floor
(not from chance), not-converged / not-learned-in-range / failed / unavailable marks as visible
badges with a legend, and unranked tasks unshaded with their reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import cells, db, heatmap, render
from harness.ids import canonical_hash
from tests.test_site import _page, _row

RED = "background: hsl(0, 60%, 85%)"  # a score at (or below) the floor


def _acc(arch: str, task: str, value: float | None, metric: str = "accuracy",
         status: str = "ok", error: str | None = None, task_config: dict | None = None,
         arch_config: dict | None = None, **extra) -> dict:
    config = task_config or {"seq_len": 64}
    return {**_row(arch, task, metric, value, status=status, error=error, unit="fraction",
                   higher_is_better=True, task_config=config, arch_config=arch_config or {},
                   extra={"chance": 0.1, "floor": 0.5, "floor_strategy": "copy the last token",
                          **({"wilson95": [value - 0.05, min(1.0, value + 0.05)]}
                             if value is not None else {}), **extra}),
            "cell_id": canonical_hash([arch, task, metric, config, arch_config or {}], 16)}


def _task(name: str, ranked: bool = True, reason: str = "") -> dict:
    return {"name": name, "digest": f"d-{name}", "version": 1, "kind": "accuracy",
            "headline": "acc" if name == "lm_eval" else "accuracy", "config": {},
            "ranked": ranked, "unranked_reason": reason, "needs_causal": True, "doc": "",
            "metrics": []}


@pytest.fixture
def board(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU", "logical_cpus": 2})
    db.store_catalog(engine, [], [_task("mqar"), _task("copy_length_gen"),
                                  _task("lm_eval", ranked=False, reason="only 32 test items")])
    db.store(engine, [
        _acc("transformer", "mqar", 0.99),
        _acc("mamba", "mqar", 0.5, not_converged=True,
             convergence="validation still improving at the end"),
        _acc("rwkv", "mqar", None, status="failed", error="Traceback\nRuntimeError: boom"),
        _acc("hyena", "mqar", None, status="unavailable", error="needs a GPU"),
        _acc("mamba", "copy_length_gen", 0.08, learned_in_range=False, accuracy_in_range=0.15),
        _acc("transformer", "lm_eval", 0.9, metric="acc"),
        _row("transformer", "prefill_latency", "latency_ms", 1.5, spread=0.2),
    ])
    return engine


def _columns(html: str) -> list[str]:
    return re.findall(r'<th data-kind="num" scope="col">(.*?)</th>', html, re.S)


def _cells(html: str) -> dict[str, list[str]]:
    """variant -> its cells (td elements), in column order."""
    rows = re.findall(r'<tr><th scope="row"><a [^>]*>([^<]+)</a></th>(.*?)</tr>', html, re.S)
    return {arch: re.findall(r"<td[^>]*>.*?</td>", tds, re.S) for arch, tds in rows}


def _index_of(columns: list[str], task: str) -> int:
    (i,) = [i for i, c in enumerate(columns) if f">{task}</a>" in c]
    return i


def _page_of(engine: db.Engine, tmp_path: Path) -> str:
    return (render.build(engine, tmp_path / "site").parent / "capability.html").read_text()


def test_shading_runs_from_the_floor_not_from_chance() -> None:
    column = {"unit": "fraction", "higher_is_better": True}
    assert cells.shade(column, 0.5, floor=0.5) == cells.shade(column, 0.0) == "hsl(0, 60%, 85%)"
    assert cells.shade(column, 0.75, floor=0.5) == "hsl(60, 60%, 85%)"
    assert cells.shade(column, 0.75) == "hsl(90, 60%, 85%)"
    assert cells.shade({**column, "ranked": False}, 0.9) is None


def test_columns_state_chance_and_floor_and_cells_shade_from_the_floor(board,
                                                                       tmp_path: Path) -> None:
    html = _page_of(board, tmp_path)
    columns = _columns(html)
    assert len(columns) == 3  # the accuracy boards only: mqar, copy_length_gen, lm_eval
    assert "prefill_latency" not in html
    mqar = _index_of(columns, "mqar")
    assert "chance 0.100" in columns[mqar]
    assert "floor 0.500 (copy the last token)" in columns[mqar]
    assert "seq_len <b>64</b>" in columns[mqar] and "accuracy ↑" in columns[mqar]
    table = _cells(html)
    # mamba's 0.5 sits at the floor: red, not the yellow 0.5 would be from chance or from 0
    assert RED in table["mamba"][mqar]
    assert "hsl(60, 60%, 85%)" not in table["mamba"][mqar]
    # transformer's 0.99: (0.99 - 0.5) / (1 - 0.5) = 0.98 of the way to green
    assert "background: hsl(118, 60%, 85%)" in table["transformer"][mqar]
    assert ">0.990<" in table["transformer"][mqar] and ">0.500<" in table["mamba"][mqar]
    # the cell's details give the baselines and the Wilson interval, visibly (no tooltip)
    assert "Wilson 95% interval over test items [0.940, 1.00]" in table["transformer"][mqar]
    assert ' title="' not in html.split("<main>")[1]


def test_marks_are_visible_badges_with_a_legend(board, tmp_path: Path) -> None:
    html = _page_of(board, tmp_path)
    columns, table = _columns(html), _cells(html)
    mqar, copy = _index_of(columns, "mqar"), _index_of(columns, "copy_length_gen")
    badge = '<span class="badge badge-{}">{}</span>'
    assert badge.format("training", "not converged") in table["mamba"][mqar]
    assert badge.format("training", "not learned in range") in table["mamba"][copy]
    assert badge.format("status", "failed") in table["rwkv"][mqar]
    assert "RuntimeError: boom" in table["rwkv"][mqar]
    assert badge.format("status", "unavailable") in table["hyena"][mqar]
    assert "background" not in table["rwkv"][mqar]  # no figure, no shade
    # a variant without a line on a board says so rather than leaving a blank
    assert badge.format("status", "not run") in table["transformer"][copy]
    assert badge.format("status", "not run") not in table["transformer"][mqar]
    legend = html.split('id="marks"')[1]
    for mark in ("not converged", "not learned in range", "failed", "unavailable", "not run"):
        assert f">{mark}</span></dt>" in legend, mark
    assert "noisy</span></dt>" not in legend  # only the marks this page shows


def test_an_unranked_task_says_why_and_is_not_shaded(board, tmp_path: Path) -> None:
    html = _page_of(board, tmp_path)
    columns, table = _columns(html), _cells(html)
    lm_eval, mqar = _index_of(columns, "lm_eval"), _index_of(columns, "mqar")
    assert "not ranked: only 32 test items" in columns[lm_eval]
    assert "not ranked" not in columns[mqar]
    assert ">0.900<" in table["transformer"][lm_eval]
    assert "background" not in table["transformer"][lm_eval]
    assert "background: hsl" in table["transformer"][mqar]  # the ranked task next to it is


def test_a_column_is_one_board_linked_to_its_place(db_url: str, tmp_path: Path) -> None:
    engine = db.connect(db_url)
    db.store(engine, [_acc(a, "mqar", v, task_config={"seq_len": n})
                      for a, v in (("mamba", 0.6), ("rwkv", 0.7)) for n in (64, 128)]
             + [_acc("rwkv", "mqar", 0.95, task_config={"seq_len": 64},
                     arch_config={"n_heads": 4})])
    site = render.build(engine, tmp_path / "site").parent
    html = (site / "capability.html").read_text()
    columns = _columns(html)
    assert len(columns) == 2  # seq_len 64 and 128: never mixed in one column
    assert "seq_len <b>64</b>" in columns[0] and "seq_len <b>128</b>" in columns[1]
    task = (site / "task" / "mqar.html").read_text()
    for col in columns:
        (anchor,) = re.findall(r'href="\./task/mqar\.html#([^"]+)"', col)
        assert f'id="{anchor}"' in task
    # rwkv has two configurations on the seq_len 64 board: its best line, said so
    rwkv = _cells(html)["rwkv"]
    assert ">0.950<" in rwkv[0] and "best of 2 configurations" in rwkv[0]
    assert ">0.700<" in rwkv[1] and "best of" not in rwkv[1]


def test_baselines_give_a_range_where_seeds_differ() -> None:
    rows = [{"extra": {"chance": 0.1, "floor": f, "floor_strategy": "most frequent"}}
            for f in (0.25, 0.2, 0.25)] + [{"extra": None}]
    assert heatmap.baselines(rows) == [
        {"name": "chance", "text": "0.100"},
        {"name": "floor", "text": "0.200–0.250 (most frequent)"}]
    assert heatmap.baselines([{"extra": {}}]) == []


def test_marks_are_visible_without_hover_in_headless_chromium(board, tmp_path: Path) -> None:
    page_path = render.build(board, tmp_path / "site").parent / "capability.html"
    problems: list[str] = []
    with _page(problems) as page:
        page.goto(page_path.resolve().as_uri())
        mamba = page.locator("tbody tr", has=page.locator("th a", has_text="mamba"))
        for mark in ("not converged", "not learned in range"):
            badge = mamba.locator(".badge-training", has_text=mark)
            assert badge.is_visible(), mark
        assert page.locator("tbody tr", has=page.locator("th a", has_text="rwkv")) \
            .locator(".badge-status", has_text="failed").is_visible()
        assert page.locator("#marks").is_visible()
        header = page.locator("thead th", has_text="lm_eval")
        assert "not ranked: only 32 test items" in header.inner_text()
    assert problems == []
