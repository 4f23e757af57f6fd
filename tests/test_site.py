"""The static site: deterministic, escaped, and clean in a real headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import db, render
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


def test_build_is_deterministic_and_escaped(populated, tmp_path: Path) -> None:
    first = render.build(populated, tmp_path / "a").read_bytes()
    second = render.build(populated, tmp_path / "b").read_bytes()
    assert first == second
    html = first.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "Test CPU &lt;x&gt;" in html
    assert "unavailable" in html and "failed" in html
    assert "1.50 ± 0.100" in html


def test_build_wipes_stale_output(populated, tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "stale.html").write_text("old")
    render.build(populated, out)
    assert not (out / "stale.html").exists()


def test_fmt_significant_digits() -> None:
    assert render.fmt(1234.5678) == "1,235"
    assert render.fmt(0.012345) == "0.0123"
    assert render.fmt(None) == "-"
    assert render.fmt(1.5e-7) == "1.50e-07"


def test_site_opens_in_headless_chromium_without_console_errors(populated,
                                                                tmp_path: Path) -> None:
    if CHROMIUM is None:
        require("ARCHBENCH_REQUIRE_BROWSER", "Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("ARCHBENCH_REQUIRE_BROWSER", "playwright (test extra) is not installed")
    index = render.build(populated, tmp_path / "site")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}"))
        pages = [index, index.parent / "scaling.html", index.parent / "capability.html",
                 *sorted((index.parent / "arch").glob("*.html"))]
        for path in pages:
            page.goto(path.resolve().as_uri())
            assert page.locator("main h1").count() == 1
        page.goto(index.resolve().as_uri())
        names = page.locator("tbody th a").all_inner_texts()
        assert names == ["mamba", "transformer"]
        # sorting by prefill latency (ascending) puts the faster transformer first
        page.locator("thead th", has_text="prefill_latency").click()
        assert page.locator("tbody th a").all_inner_texts() == ["transformer", "mamba"]
        assert page.locator("link[rel=stylesheet]").count() == 1
        color = page.evaluate("getComputedStyle(document.querySelector('.status-failed')).color")
        browser.close()
    assert color == "rgb(163, 34, 43)"  # the stylesheet loaded from file://
    assert problems == []
