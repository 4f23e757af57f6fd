"""History pages: a board's series across runs and code versions, with change points."""

from __future__ import annotations

import re
from pathlib import Path

from harness import db, render
from tests.test_site_boards import _engine, _row


def _prefill(arch: str, ms: float, run: str, version: str) -> dict:
    return _row(arch, ms, run=run, task="prefill_latency", metric="latency_ms", unit="ms",
                higher_is_better=False, task_config={"seq_len": 64}, ci_low=ms * 0.95,
                ci_high=ms * 1.05, code_version=version, extra={})


def _nights(engine: db.Engine) -> None:
    for night, version in enumerate(("git:a", "git:b", "git:c")):
        run = f"n{night}"
        db.start_run(engine, run, "nightly", version, "fp0", 1, config={"model": {"d_model": 32}})
        slow = 2.0 if night == 2 else 1.0  # mamba regresses on the third night
        db.store(engine, [_prefill("mamba", slow, run, version),
                          _prefill("transformer", 1.5, run, version)])
        # accuracy over two seeds; only measured once: no history for it
        if night == 0:
            db.store(engine, [_row("mamba", 0.5 + s / 10, seed=s, run=run) for s in range(2)])


def test_a_board_links_its_history_with_points_bars_and_change_points(db_url: str,
                                                                       tmp_path: Path) -> None:
    engine = _engine(db_url)
    _nights(engine)
    setting = next(r["setting_id"] for r in db.results(engine) if r["arch"] == "mamba"
                   and r["task"] == "prefill_latency")
    db.store_change_point(engine, {
        "hardware_fingerprint": "fp0", "setting_id": setting, "metric": "latency_ms",
        "arch": "mamba", "task": "prefill_latency", "run_id": "n2", "confirm_run_id": None,
        "nightly_id": None, "change": "regression", "confirmed": True, "rel_change": 1.0,
        "p_value": 0.001, "threshold": 0.1, "confidence": "high", "method": "test",
        "detail": {}})
    site = render.build(engine, tmp_path / "site").parent
    index = (site / "index.html").read_text()
    links = re.findall(r'href="\./history/([^"]+)\.html"', index)
    assert len(links) == 1 and links[0].startswith("prefill_latency-")  # mqar ran once
    page = (site / "history" / f"{links[0]}.html").read_text()
    # a line per variant through its three runs; markers where a tooltip opens: the newest run
    # of each line (mamba's is the change point, hollow); older runs' bars form a band
    assert page.count("<polyline") == 2 and page.count('class="band"') == 2
    assert page.count('<g class="pt" tabindex="0">') == 2 and page.count('fill="white"') == 1
    assert "regression +100.0% (confirmed)" in page and "git:c" in page
    assert 'class="err"' in page  # the markers' CI bars
    assert "3 runs" in page and "<code>n2</code>" in page
    # the band runs through each run's CI: mamba's 0.95 and 1.05 ms at the first run
    band = re.search(r'<polygon points="([^"]+)" fill="#[0-9a-f]+" class="band"/>', page)
    assert band and len(band.group(1).split()) == 6


def test_seeds_of_a_run_are_one_point_with_their_range(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    for run in ("r1", "r2"):
        db.start_run(engine, run, "a", "git:1", "fp0", 1, config={"model": {"d_model": 32}})
        db.store(engine, [_row("mamba", 0.4 + s / 10 + (run == "r2") / 10, seed=s, run=run)
                          for s in range(3)])
    site = render.build(engine, tmp_path / "site").parent
    (page,) = (site / "history").glob("*.html")
    html = page.read_text()
    assert html.count('<g class="pt" tabindex="0">') == 1  # the newest run
    assert "range over 3 seeds [0.500–0.700]" in html
    assert re.search(r"mamba: 0\.600 range over 3 seeds", html)
