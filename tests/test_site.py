"""The static site: deterministic, escaped, and clean in a real headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness import db, outputs, render
from tests.conftest import require

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _row(arch: str, task: str, metric: str, value: float | None, status: str = "ok",
         error: str | None = None, **kw) -> dict:
    return {
        "run_id": "r1", "cell_id": f"{arch}-{task}", "config_hash": "h", "code_version": "git:t",
        "hardware_fingerprint": "fp0", "arch": arch, "arch_version": 1, "arch_config": {},
        "task": task, "task_version": 1, "task_config": {}, "seed": 0, "metric": metric,
        "unit": "ms", "value": value, "higher_is_better": False, "n_samples": 5, "status": status,
        "error": error, "method": "test", "device": "cpu", "dtype": "float32", "threads": 1, **kw,
    }


@pytest.fixture
def populated(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU <x>", "logical_cpus": 2})
    db.store(engine, [
        _row("transformer", "prefill_latency", "latency_ms", 1.5, spread=0.2, ci_low=1.4,
             ci_high=1.6),
        _row("mamba", "prefill_latency", "latency_ms", 2.5, spread=0.1),
        _row("mamba", "energy", "energy_per_token_j", None, status="unavailable",
             error="no RAPL domains"),
        _row("transformer", "energy", "energy_per_token_j", None, status="failed",
             error="Traceback\nRuntimeError: <script>alert(1)</script>"),
    ])
    return engine


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_build_is_deterministic_and_escaped(populated, tmp_path: Path) -> None:
    first = render.build(populated, tmp_path / "a").parent
    second = render.build(populated, tmp_path / "b").parent
    assert _files(first) == _files(second)
    html = (first / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "Test CPU &lt;x&gt;" in html
    assert 'class="badge badge-status">unavailable<' in html
    assert 'class="badge badge-status">failed<' in html
    assert "1.50 ms" in html and "[1.40–1.60]" in html  # a latency carries its CI
    assert "no CI (n=5)" in html  # ... or says it has none
    assert "latency (ms)" in html and "energy per token (J)" in html  # readable columns
    for page in ("claims.html", "scaling.html", "task/prefill_latency.html",
                 "task/energy.html", "arch/mamba.html", "machine/fp0.html"):
        assert (first / page).is_file(), page
    assert len(list((first / "csv").glob("*.csv"))) == 2


def test_build_replaces_an_earlier_build(populated, tmp_path: Path) -> None:
    out = tmp_path / "site"
    render.build(populated, out)
    assert (out / outputs.SITE_MARKER).is_file()
    (out / "stale.html").write_text("old")
    render.build(populated, out)
    assert not (out / "stale.html").exists()
    assert (out / "index.html").is_file() and (out / outputs.SITE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_fmt_significant_digits() -> None:
    assert render.fmt(1234.5678) == "1,235"
    assert render.fmt(0.012345) == "0.0123"
    assert render.fmt(None) == "-"
    assert render.fmt(1.5e-7) == "1.50e-07"


def _browser():
    """playwright's sync entry point, or a skip (a failure where CI requires the browser)."""
    if CHROMIUM is None:
        require("ARCHBENCH_REQUIRE_BROWSER", "Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("ARCHBENCH_REQUIRE_BROWSER", "playwright (test extra) is not installed")
    return sync_playwright


@contextmanager
def _page(problems: list[str]) -> Iterator[Any]:
    """A headless Chromium page; console errors, page errors and failed loads go to
    ``problems``."""
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}"))
        try:
            yield page
        finally:
            browser.close()


def test_site_opens_in_headless_chromium_without_console_errors(populated,
                                                                tmp_path: Path) -> None:
    index = render.build(populated, tmp_path / "site")
    problems: list[str] = []
    with _page(problems) as page:
        pages = sorted(p for p in index.parent.rglob("*.html"))
        assert len(pages) >= 8
        for path in pages:
            page.goto(path.resolve().as_uri())
            assert page.locator("main h1").count() == 1, path
        page.goto(index.resolve().as_uri())
        board = page.locator("section.board", has_text="prefill_latency")
        names = board.locator("tbody th a")
        assert names.all_inner_texts() == ["transformer", "mamba"]  # ranked: faster first
        # sorting by latency, descending on the second click, puts the slower mamba first
        header = board.locator("thead th", has_text="latency (ms)")
        header.click()
        header.click()
        assert names.all_inner_texts() == ["mamba", "transformer"]
        assert board.locator("td.best .badge-best").count() == 1
        assert page.locator("link[rel=stylesheet]").count() == 1
        color = page.evaluate("getComputedStyle(document.querySelector('.status-failed')).color")
        # every link of the index reaches a file of the site
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            if href.startswith("file:"):
                assert Path(href.split("#")[0][len("file://"):]).is_file(), href
    assert color == "rgb(163, 34, 43)"  # the stylesheet loaded from file://
    assert problems == []


def _timed(arch: str, value: float, ci: tuple[float, float], **extra) -> dict:
    return _row(arch, "prefill_latency", "latency_ms", value, spread=value * 0.2,
                ci_low=ci[0], ci_high=ci[1], n_samples=20,
                summary={"median": value, "ci_low": ci[0], "ci_high": ci[1]}, extra=extra)


@pytest.fixture
def timed(db_url: str) -> db.Engine:
    """Latency rows with every trust mark: noisy, contended, CI target missed, ref ratio."""
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU", "logical_cpus": 2})
    db.store(engine, [
        _timed("transformer", 4.27, (3.9, 4.6), noisy=True, contended=False),
        _timed("mamba", 2.5, (2.4, 2.6), noisy=False, contended=True, contention={
            "n_attempts": 2, "kept_attempt": 1, "stop_reason": "max_attempts (2) reached",
            "rule": "contended if ...", "attempts": [
                {"contended": True, "score": 3.0, "reasons": ["steal 30.0% > 10.0%"]},
                {"contended": True, "score": 1.5, "others_cpu_cores": 1.25,
                 "steal_fraction": 0.0, "reasons": ["others' CPU beyond idle cores 1.25 core "
                                                    "> 0.50 core"]}]}),
        _timed("hyena", 7.5, (6.0, 9.0), noisy=False, ci_met=False, ci_target=0.05,
               ref_ms=4.1667, ref_ratio=1.8),
        {**_timed("hyena", 1.8, (1.7, 1.9), noisy=False), "metric": "latency_vs_ref",
         "unit": "x reference"},
    ])
    return engine


def test_timed_figures_show_ci_marks_and_legend_in_headless_chromium(timed,
                                                                      tmp_path: Path) -> None:
    index = render.build(timed, tmp_path / "site")
    problems: list[str] = []
    with _page(problems) as page:
        page.goto(index.resolve().as_uri())
        rows = page.locator("section.board tbody tr")
        cells = {name: rows.filter(has=page.locator("th a", has_text=name)).locator("td").nth(1)
                 for name in ("transformer", "mamba", "hyena")}
        for cell in cells.values():
            assert cell.is_visible()
        assert cells["transformer"].inner_text().split() == ["4.27", "ms", "[3.90–4.60]",
                                                             "noisy", "details"]
        assert cells["transformer"].locator(".badge-noisy").is_visible()
        # the details open without hover (a click, or Enter on the summary)
        details = cells["transformer"].locator("details")
        assert not details.locator("small").is_visible()
        details.locator("summary").click()
        assert "IQR/median 20% > 10%" in details.locator("small").inner_text()
        contended = cells["mamba"].locator(".badge-contended")
        assert contended.is_visible() and contended.inner_text() == "contended"
        cells["mamba"].locator("summary").focus()
        page.keyboard.press("Enter")
        why = cells["mamba"].locator("details small").inner_text()
        assert "others' CPU beyond idle cores 1.25 core > 0.50 core" in why
        assert "others_cpu_cores 1.25" in why and "kept attempt 2 of 2" in why
        assert "steal 30.0%" not in why  # the figures of the attempt kept, not a discarded one
        assert cells["mamba"].locator(".ci").inner_text() == "[2.40–2.60]"
        assert not cells["mamba"].locator(".badge-noisy").count()
        hyena = cells["hyena"]
        assert hyena.locator(".badge-ci").is_visible()
        assert hyena.locator(".ref").inner_text() == "1.8x ref"
        hyena.locator("summary").click()
        why = hyena.locator("details small").inner_text()
        assert "4.17 ms" in why
        assert "target of ± 5% of the median" in why and "achieved ± 20% of the median" in why
        legend = page.locator("#marks")
        assert legend.is_visible()
        for word in ("noisy", "IQR / median > 10%", "contended", "other processes used the CPU",
                     "CI target missed", "x ref", "reference workload"):
            assert word in legend.inner_text(), word
        # the variant page shows the same marks beside the value, and the CI
        page.locator("section.board tbody th a", has_text="hyena").click()
        assert page.locator("main h1").inner_text().startswith("hyena")
        row = page.locator("table.variant-results tr")
        assert row.locator(".rank").inner_text() == "rank 3 of 3"
        assert row.locator(".badge-ci").is_visible() and row.locator(".ref").is_visible()
        assert row.locator(".ci").all_inner_texts() == ["[6.00–9.00]", "[1.70–1.90]"]
        assert page.locator("#marks").is_visible()
    assert problems == []


def test_scaling_page_lists_marked_sweep_points(db_url: str, tmp_path: Path) -> None:
    engine = db.connect(db_url)
    db.store(engine, [
        {**_timed(arch, 1.0 * n / 64 * (2 if arch == "mamba" else 1), (0.9, 1.1),
                  noisy=(arch == "mamba" and n == 128)),
         "task_config": {"seq_len": n}, "cell_id": f"{arch}-{n}"}
        for arch in ("mamba", "transformer") for n in (64, 128, 256)])
    site = render.build(engine, tmp_path / "site").parent
    html = (site / "scaling.html").read_text()
    assert "Marked points" in html and 'id="marks"' in html
    marked = html.split('<ul class="marked">')[1].split("</ul>")[0]
    assert marked.count("<li") == 1 and "mamba at seq_len 128: 4.00 ms" in marked
    assert "[0.900–1.10]" in marked and ">noisy</span>" in marked
    assert html.count('<g class="pt" tabindex="0">') == 6
    task = (site / "task" / "prefill_latency.html").read_text()
    assert "Scaling with length" in task and task.count('class="pt"') == 6
    assert 'class="err"' in task  # CI bars


def test_clicking_a_numeric_header_sorts_the_board_in_headless_chromium(db_url: str,
                                                                        tmp_path: Path) -> None:
    engine = db.connect(db_url)
    values = {"mamba": 0.6, "rwkv": 0.3, "transformer": 0.9, "hyena": 0.45}
    db.store(engine, [{**_row(arch, "mqar", "accuracy", v, unit="fraction",
                              higher_is_better=True), "cell_id": f"acc-{arch}"}
                      for arch, v in values.items()])
    index = render.build(engine, tmp_path / "site")
    best_first = sorted(values, key=values.get, reverse=True)
    problems: list[str] = []
    with _page(problems) as page:
        page.goto(index.resolve().as_uri())
        board = page.locator("section.board", has_text="mqar")
        names = board.locator("tbody th a")
        header = board.locator("thead th", has_text="accuracy")
        assert header.get_attribute("data-kind") == "num"

        def shown() -> list[tuple[str, float]]:
            sorts = board.locator("tbody tr").evaluate_all(
                "rows => rows.map(r => r.cells[2].getAttribute('data-sort'))")
            return list(zip(names.all_inner_texts(), map(float, sorts), strict=True))

        assert [a for a, _ in shown()] == best_first  # ranked: higher accuracy first
        assert header.get_attribute("aria-sort") is None
        header.click()
        assert shown() == sorted(values.items(), key=lambda kv: kv[1])
        assert header.get_attribute("aria-sort") == "ascending"
        assert board.locator("tbody tr").first.locator("td").nth(1).inner_text() \
            .startswith("0.300")  # the figure moved with its row
        header.click()
        assert shown() == sorted(values.items(), key=lambda kv: -kv[1])
        assert header.get_attribute("aria-sort") == "descending"
        assert board.locator("thead th[aria-sort]").count() == 1  # only the clicked one
    assert problems == []
