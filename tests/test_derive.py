"""Scaling exponents and crossovers from sweeps, and the site's scaling page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import db, derive, render
from tests.conftest import shipped_declarations, store_shipped_catalog

LENGTHS = [32, 64, 128, 256, 512]
CURVES = {"linear": lambda x: float(x), "quadratic": lambda x: 0.01 * x * x}  # cross at 100


def _row(arch: str, x: int, y: float) -> dict:
    return {
        "run_id": "r", "cell_id": f"{arch}{x}", "config_hash": "h", "code_version": "git:t",
        "hardware_fingerprint": "fp", "arch": arch, "arch_version": 1, "arch_config": {},
        "task": "prefill_latency", "task_version": 1,
        "task_config": {"seq_len": x, "batch_size": 1}, "seed": 0, "metric": "latency_ms",
        "unit": "ms", "value": y, "n_samples": 5, "status": "ok", "method": "t",
        "device": "cpu", "dtype": "float32", "threads": 2,
    }


ROWS = [_row(a, x, f(x)) for a, f in CURVES.items() for x in LENGTHS]
DECL = shipped_declarations()


def test_exponents_and_crossover_are_exact_on_power_laws() -> None:
    out = derive.compute(ROWS, "git:t", DECL)["fp"]
    exps = {d["arch"]: d["value"] for d in out if d["kind"] == "scaling_exponent"}
    assert exps == pytest.approx({"linear": 1.0, "quadratic": 2.0})
    (cross,) = [d for d in out if d["kind"] == "crossover_length"]
    assert cross["value"] == pytest.approx(100.0)
    assert cross["points"]["lower_above"] == "linear"


def test_no_crossover_when_curves_do_not_cross() -> None:
    assert derive.crossover({1: 1.0, 2: 2.0}, {1: 3.0, 2: 6.0}) is None


def test_failed_rows_and_short_series_are_ignored() -> None:
    rows = [*ROWS[:2], {**ROWS[2], "status": "timeout", "value": None}]
    assert derive.compute(rows, "git:t", DECL) == {}


def test_refresh_stores_and_site_plots(db_url: str, tmp_path: Path) -> None:
    engine = db.connect(db_url)
    db.store(engine, ROWS)
    assert derive.refresh(engine, "git:t") == 0  # no task declared what to derive
    store_shipped_catalog(engine)
    assert derive.refresh(engine, "git:t") == 3
    assert derive.refresh(engine, "git:t") == 3  # replaced, not appended
    assert len(db.derived(engine)) == 3
    index = render.build(engine, tmp_path / "site")
    page = (index.parent / "scaling.html").read_text()
    assert page.count("<polyline") == 2
    assert 'class="legend">linear</text>' in page and 'class="legend">quadratic</text>' in page
    assert ">100.0<" in page  # the crossover length


def test_achieved_flops_against_measured_peak() -> None:
    flops = {**_row("transformer", 256, 0.0), "task": "flops",
             "metric": "forward_flops_per_token", "value": 1e6}
    speed = {**_row("transformer", 256, 0.0), "metric": "tokens_per_s", "value": 2e4}
    out = derive.achieved([flops, speed], {("fp", "cpu", "float32", 2): 1e11}, "git:t",
                          DECL)["fp"]
    got = {d["kind"]: d["value"] for d in out}
    assert got == pytest.approx({"achieved_flops_per_s": 2e10, "fraction_of_peak": 0.2})
    assert derive.achieved([flops], {}, "git:t", DECL) == {}  # no prefill at that shape: nothing


def test_seed_mean_with_ci_reaches_the_leaderboard(db_url: str, tmp_path: Path) -> None:
    def acc(seed: int, value: float) -> dict:
        return {**_row("transformer", 64, value), "task": "mqar", "metric": "accuracy",
                "unit": "fraction", "seed": seed, "cell_id": f"s{seed}", "config_hash": "cfg",
                "task_config": {"n_pairs": 4}}

    rows = [acc(0, 0.90), acc(1, 0.95), acc(2, 1.0)]
    (mean,) = derive.seed_means(rows, "git:t")["fp"]
    assert mean["value"] == pytest.approx(0.95)
    half = 4.302653 * 0.05 / 3**0.5  # t(0.975, df=2) x sd / sqrt(n)
    assert mean["points"]["ci_high"] - mean["value"] == pytest.approx(half, rel=1e-3)
    assert mean["points"]["n_seeds"] == 3
    assert derive.seed_means(rows[:1], "git:t") == {}  # one seed: no interval
    engine = db.connect(db_url)
    db.store(engine, rows)
    derive.refresh(engine, "git:t")
    html = render.build(engine, tmp_path / "site").read_text()
    assert "0.950 ± 0.124 (n=3)" in html


def test_accuracy_cells_are_shaded_as_a_heat_map(db_url: str, tmp_path: Path) -> None:
    row = {**_row("transformer", 64, 0.5), "task": "mqar", "metric": "accuracy",
           "unit": "fraction", "higher_is_better": True}
    engine = db.connect(db_url)
    db.store(engine, [row, {**row, "arch": "mamba", "value": 1.0, "cell_id": "m"},
                      {**_row("transformer", 64, 2.0), "cell_id": "lat"}])
    site = render.build(engine, tmp_path / "site").parent
    index = (site / "index.html").read_text()
    boards = dict(re.findall(r'<section class="board" id="(mqar|prefill_latency)-[^"]*"'
                             r'(.*?)</section>', index, re.S))
    # no floor recorded: shaded from 0, red to green
    assert 'style="background: hsl(60, 60%, 85%)"' in boards["mqar"]  # 0.5: halfway, yellow
    assert 'style="background: hsl(120, 60%, 85%)"' in boards["mqar"]  # 1.0: green
    assert "background" not in boards["prefill_latency"]  # a latency is not a heat map
    # the capability page: accuracy boards only, the same shading
    cap = (site / "capability.html").read_text()
    assert ">mqar</a>" in cap
    assert 'style="background: hsl(60, 60%, 85%)"' in cap
    assert 'style="background: hsl(120, 60%, 85%)"' in cap
    assert "prefill_latency" not in cap and "2.00 ms" not in cap
