"""Boards keyed by setting: a column never mixes task configs, budgets or versions; seeds are
averaged with a CI; the stored catalog is the only source of metadata; marks are visible."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import pytest

from harness import claims, db, ids, render
from tests.test_site import _page

SHOTS = Path(os.environ.get("ARCHBENCH_SITE_SHOTS", "/tmp/site-shots"))


def _row(arch: str, value: float | None, *, seed: int = 0, run: str = "r1",
         task_config: dict | None = None, arch_config: dict | None = None,
         status: str = "ok", **more: Any) -> dict[str, Any]:
    row = {"run_id": run, "config_hash": "h", "code_version": "git:1",
           "hardware_fingerprint": "fp0", "arch": arch, "arch_version": 1,
           "arch_config": arch_config or {"d_model": 32, "n_layers": 2}, "task": "mqar",
           "task_version": 1, "task_config": task_config or {"seq_len": 12, "steps": 100},
           "seed": seed, "metric": "accuracy", "unit": "fraction", "value": value,
           "higher_is_better": True, "n_samples": 100, "status": status, "error": None,
           "method": "exact match", "device": "cpu", "dtype": "float32", "threads": 1,
           "extra": {"chance": 0.1, "floor": 0.2, "floor_strategy": "most frequent"}, **more}
    row["cell_id"] = f"{run}-{ids.setting_id(row)}-{seed}"
    row["setting_id"] = ids.setting_id(row)
    return row


def _engine(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU", "logical_cpus": 2})
    return engine


def _boards(index: Path) -> list[str]:
    html = index.read_text()
    return re.findall(r'<section class="board" id="([^"]+)"', html)


def _board_html(index: Path, board_id: str) -> str:
    html = index.read_text()
    return html.split(f'id="{board_id}"')[1].split("</section>")[0]


def test_two_mqar_settings_give_two_boards(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.start_run(engine, "r1", "a", "git:1", "fp0", 2, config={"model": {"d_model": 32}})
    db.store(engine, [_row("mamba", 0.9), _row("mamba", 0.4, task_config={"seq_len": 16,
                                                                          "steps": 100}),
                      _row("mamba", 0.3, task_config={"seq_len": 12, "steps": 1000})])
    # the same task config under another budget (the run's model section): a third board
    db.start_run(engine, "r2", "b", "git:1", "fp0", 1, config={"model": {"d_model": 64}})
    db.store(engine, [_row("mamba", 0.7, run="r2")])
    index = render.build(engine, tmp_path / "site")
    boards = _boards(index)
    assert len(boards) == 4
    shown = sorted(re.search(r'class="val">([^<]+)<', _board_html(index, b)).group(1)
                   for b in boards)
    assert shown == ["0.300", "0.400", "0.700", "0.900"]  # one figure each, never averaged
    html = index.read_text()
    assert "seq_len <b>16</b>" in html and "steps <b>1000</b>" in html
    assert "model d_model <b>64</b>" in html and "model d_model <b>32</b>" in html


def test_runs_without_config_fall_back_to_width_and_depth(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.store(engine, [_row("mamba", 0.9), _row("mamba", 0.5, arch_config={"d_model": 64,
                                                                         "n_layers": 2})])
    index = render.build(engine, tmp_path / "site")
    assert len(_boards(index)) == 2
    html = index.read_text()
    assert 'data-size="d_model 32, n_layers 2"' in html
    assert 'data-size="d_model 64, n_layers 2"' in html


def test_seeds_are_averaged_with_a_ci(db_url: str, tmp_path: Path) -> None:
    from harness.seeds import mean_ci

    engine = _engine(db_url)
    db.store(engine, [_row("mamba", v, seed=s) for s, v in enumerate((0.5, 0.6, 0.7))])
    index = render.build(engine, tmp_path / "site")
    mean, low, high = mean_ci([0.5, 0.6, 0.7])
    cell = _board_html(index, _boards(index)[0])
    assert f"{render.fmt(mean)} ± {render.fmt((high - low) / 2)} (n=3)" in cell
    assert f"95% CI [{render.fmt(low)}–{render.fmt(high)}]" in cell
    rows = list(csv.DictReader((index.parent / "csv" / f"{_boards(index)[0]}.csv").open()))
    assert rows[0]["variant"] == "mamba" and rows[0]["accuracy_n"] == "3"
    assert float(rows[0]["accuracy"]) == pytest.approx(mean)
    assert float(rows[0]["accuracy_ci_low"]) == pytest.approx(low)


def test_only_the_newest_version_is_shown(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    old = [_row("mamba", 0.1 + s / 100, seed=s, arch_digest="a1", task_digest="t1")
           for s in range(3)]
    new = [_row("mamba", 0.9, seed=0, run="r2", arch_digest="a2", task_digest="t1")]
    # rows without digests: one version per code version
    legacy = [_row("rwkv", 0.2, seed=s) for s in range(2)]
    legacy_new = [_row("rwkv", 0.8, seed=0, run="r2", code_version="git:2")]
    db.store(engine, old + legacy)
    db.store(engine, new + legacy_new)
    index = render.build(engine, tmp_path / "site")
    (board,) = _boards(index)
    cell = _board_html(index, board)
    assert ">0.900<" in cell and ">0.800<" in cell
    assert ">0.110" not in cell and ">0.200<" not in cell and "(n=" not in cell


def test_unregistered_variant_page_comes_from_the_stored_catalog(db_url: str,
                                                                 tmp_path: Path) -> None:
    engine = _engine(db_url)
    doc = ("A *plugin* mixer with `state` <script>alert(1)</script>.\n\n- one\n- two\n\n"
           "[bad](javascript:alert(1))")
    db.store_catalog(engine, [{"name": "plugin_x", "digest": "d1", "version": 3,
                               "family": "plugin family", "causal": True,
                               "papers": ["Mamba (arXiv:2312.00752)", "https://example.org/p",
                                          "A book"],
                               "config_keys": ["d_model"], "doc": doc}],
                     [{"name": "mqar", "digest": "t1", "version": 2, "kind": "accuracy",
                       "headline": "accuracy", "config": {}, "ranked": True,
                       "unranked_reason": "", "needs_causal": True,
                       "doc": "Multi-query associative recall.",
                       "metrics": [{"name": "accuracy", "unit": "fraction",
                                    "higher_is_better": True, "doc": "exact match"}]}])
    db.store(engine, [_row("plugin_x", 0.5), _row("not_in_catalog", 0.4)])
    site = render.build(engine, tmp_path / "site").parent
    page = (site / "arch" / "plugin_x.html").read_text()
    assert "plugin family" in page and "v3" in page
    assert "<em>plugin</em>" in page and "<code>state</code>" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "<li>one</li>" in page and 'href="javascript' not in page
    assert '<a href="https://arxiv.org/abs/2312.00752"' in page
    assert '<a href="https://example.org/p"' in page and "<cite>A book</cite>" in page
    assert "d_model" in page and ">0.500<" in page
    plain = (site / "arch" / "not_in_catalog.html").read_text()
    assert "not in the stored catalog" in plain
    task = (site / "task" / "mqar.html").read_text()
    assert "Multi-query associative recall." in task and "most frequent" in task


def test_an_unranked_task_says_why_and_is_neither_ranked_nor_shaded(db_url: str,
                                                                    tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.store_catalog(engine, [], [{"name": "mqar", "digest": "t1", "version": 1,
                                   "kind": "accuracy", "headline": "accuracy", "config": {},
                                   "ranked": False, "unranked_reason": "only 32 items",
                                   "needs_causal": True, "doc": "", "metrics": []}])
    db.store(engine, [_row("mamba", 0.5), _row("rwkv", 0.9)])
    index = render.build(engine, tmp_path / "site")
    board = _board_html(index, _boards(index)[0])
    assert "not ranked: only 32 items" in board
    assert "background: hsl" not in board and 'data-sort="1">1<' not in board


def test_two_builds_are_byte_identical(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    _realistic(engine)  # two runs of a setting: history pages too
    first = render.build(engine, tmp_path / "a").parent
    second = render.build(engine, tmp_path / "b").parent
    assert list((first / "history").glob("*.html"))

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}

    assert files(first) == files(second)
    assert len(files(first)) > 10


def test_marks_are_visible_badges_with_a_legend(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.store(engine, [
        _row("mamba", 0.5, extra={"not_converged": True, "convergence": "still improving"}),
        _row("rwkv", None, status="failed", error="Traceback\nRuntimeError: boom"),
        _row("hyena", 2.0, task="prefill_latency", metric="latency_ms", unit="ms",
             higher_is_better=False, extra={"noisy": True, "contended": True, "ci_met": False}),
        _row("=evil", 3.0, task="prefill_latency", metric="latency_ms", unit="ms",
             higher_is_better=False, extra={}),
    ])
    index = render.build(engine, tmp_path / "site")
    html = index.read_text()
    for kind, mark in (("training", "not converged"), ("status", "failed"), ("noisy", "noisy"),
                       ("contended", "contended"), ("ci", "CI target missed")):
        assert f'<span class="badge badge-{kind}">{mark}</span>' in html, mark
    legend = html.split('id="marks"')[1]
    for mark in ("not converged", "failed", "noisy", "contended", "CI target missed"):
        assert f">{mark}</span></dt>" in legend, mark
    assert "RuntimeError: boom" in html  # the error, in the cell's details, not a tooltip
    assert ' title="' not in html.split("<main>")[1]  # no hover-only details
    texts = [p.read_text() for p in (index.parent / "csv").glob("*.csv")]
    assert any("'=evil" in t for t in texts) and not any("\n=evil" in t for t in texts)


def test_claims_page_shows_reproduced_not_reproduced_and_not_run_with_evidence(
        db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    zoology, textbook = (next(c for c in claims.load() if c.id == i) for i in (
        "zoology-mqar-attention-vs-gated-convolutions", "textbook-mqar-attention-vs-lti-ssm"))
    db.start_run(engine, "r1", "capability", "git:1", "fp0", 1)
    # mqar: transformer solves it, h3 and hyena fall below (zoology reproduced); s4d solves it
    # too (textbook's "s4d does not" is not reproduced); every other task: not run
    acc = {"transformer": 0.98, "h3": 0.41, "hyena": 0.37, "s4d": 0.97}
    db.store(engine, [_row(a, v, seed=s, extra={"chance": 0.06, "floor": 0.06,
                                                 "floor_strategy": "most frequent"})
                      for a, v in acc.items() for s in range(2)])
    verdicts = {v.claim.id: v for v in claims.evaluate(engine)}
    assert verdicts[zoology.id].status == claims.REPRODUCED
    assert verdicts[textbook.id].status == claims.NOT_REPRODUCED
    others = [v for i, v in verdicts.items() if i not in (zoology.id, textbook.id)]
    assert others and {v.status for v in others if v.claim.task != "mqar"} == {claims.NOT_RUN}
    page = (render.build(engine, tmp_path / "site").parent / "claims.html").read_text()
    sections = page.split('<section class="claim"')[1:]
    assert len(sections) == len(verdicts)

    def section(claim: claims.Claim) -> str:
        return next(s for s in sections if claim.claim.split()[3] in s and claim.paper["url"]
                    in s and (f"suite {claim.suite}") in s)

    good, bad = section(zoology), section(textbook)
    assert 'badge-reproduced">reproduced' in good and "<table" in good
    assert all(a in good for a in ("transformer", "h3", "hyena")) and "0.980" in good
    assert 'badge-not-reproduced">not reproduced' in bad and "s4d" in bad and "0.970" in bad
    assert "seq_len" in good  # the evidence rows carry their setting
    assert sum('badge-not-run">not run' in s for s in sections) == len(
        [v for v in others if v.status == claims.NOT_RUN])


def test_machine_page_shows_facts_peaks_and_volatile_facts(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.store_peak(engine, "fp0", "cpu", "float32", 1,
                  {"flops_per_s": 2.5e10, "method": "matmul", "n_samples": 3})
    db.store(engine, [_row("mamba", 0.5, volatile={"energy_meter": "rapl", "load": 0.25}),
                      _row("rwkv", 0.6)])  # the newest row recorded no volatile facts
    site = render.build(engine, tmp_path / "site").parent
    page = (site / "machine" / "fp0.html").read_text()
    assert "Test CPU" in page and "logical_cpus" in page
    assert "2.50e+10" in page and "energy_meter" in page and "rapl" in page
    assert 'href="./machine/fp0.html"' in (site / "index.html").read_text()


def test_changes_page_lists_change_points(db_url: str, tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.store(engine, [_row("mamba", 0.5)])
    db.store_change_point(engine, {
        "hardware_fingerprint": "fp0", "setting_id": "s1", "metric": "accuracy",
        "arch": "mamba", "task": "mqar", "run_id": "r9", "change": "regression",
        "confirmed": True, "rel_change": -0.125, "p_value": 0.001, "threshold": 0.05,
        "confidence": "high", "method": "mann-whitney"})
    page = (render.build(engine, tmp_path / "site").parent / "changes.html").read_text()
    assert "regression</span>" in page and "-12.5%" in page and "confirmed" in page
    assert 'href="arch/mamba.html"' in page


def _realistic(engine: db.Engine) -> None:
    """A small database like a quick suite's: accuracy over seeds, a latency sweep."""
    db.start_run(engine, "r1", "quick", "git:1", "fp0", 9, config={"model": {"d_model": 32}})
    rows = []
    for k, arch in enumerate(("mamba", "rwkv", "transformer")):
        rows += [_row(arch, 0.4 + k / 5 + s / 50, seed=s, extra={
            "chance": 0.1, "floor": 0.2, "num_params": 1000 * (k + 1),
            "not_converged": arch == "rwkv"}) for s in range(3)]
        for n in (64, 128, 256):
            y = (n / 64) ** (1 + k / 3)
            for task, metric in (("prefill_latency", "latency_ms"),
                                 ("decode_latency", "latency_ms")):
                rows.append(_row(arch, y, task=task, metric=metric, unit="ms",
                                 higher_is_better=False, n_samples=20,
                                 task_config={"seq_len" if task[0] == "p" else "context_len": n},
                                 ci_low=y * 0.9, ci_high=y * 1.1, spread=y / 10,
                                 extra={"noisy": n == 128 and k == 1}))
    db.store(engine, rows)
    # a second night re-measures prefill at 64 under a new version: its history pages
    db.start_run(engine, "r2", "quick", "git:2", "fp0", 3, config={"model": {"d_model": 32}})
    db.store(engine, [_row(arch, 1.1 + k / 10, run="r2", task="prefill_latency",
                           metric="latency_ms", unit="ms", higher_is_better=False,
                           n_samples=20, task_config={"seq_len": 64}, ci_low=1.0 + k / 10,
                           ci_high=1.2 + k / 10, code_version="git:2", extra={})
                      for k, arch in enumerate(("mamba", "rwkv", "transformer"))])


def test_pages_in_headless_chromium_filter_and_keyboard_tooltips(db_url: str,
                                                                 tmp_path: Path) -> None:
    engine = _engine(db_url)
    _realistic(engine)
    index = render.build(engine, tmp_path / "site")
    site = index.parent
    task = site / "task" / "mqar.html"
    assert task.read_text().count('<svg class="plot"') >= 2  # Pareto: decode, prefill, params
    problems: list[str] = []
    every = sorted(site.rglob("*.html"))
    kinds = {p.parent.name if p.parent != site else p.stem for p in every}
    assert kinds == {"index", "capability", "claims", "scaling", "changes", "task", "arch",
                     "machine", "history"}
    with _page(problems) as page:
        for path in every:
            page.goto(path.resolve().as_uri())
            assert page.locator("main h1").count() == 1, path
        page.goto(index.resolve().as_uri())
        boards = page.locator("section.board")
        n = boards.count()
        assert n == 7 and page.locator("form.filters").is_visible()
        page.locator("select[data-filter=size]").select_option("d_model 32")
        assert page.locator("section.board:visible").count() == n
        page.locator("select[data-filter=dtype]").select_option("float32")
        assert page.locator("section.board:visible").count() == n
        page.evaluate("""() => { const b = document.querySelector('section.board');
            b.setAttribute('data-dtype', 'bfloat16'); }""")
        page.locator("select[data-filter=dtype]").select_option("")
        page.locator("select[data-filter=dtype]").select_option("float32")
        assert page.locator("section.board:visible").count() == n - 1
        page.goto(task.resolve().as_uri())
        point = page.locator("svg.plot g.pt").first
        tip = point.locator("text.tip")
        assert page.evaluate("e => getComputedStyle(e).display", tip.element_handle()) == "none"
        point.focus()
        assert page.evaluate("e => getComputedStyle(e).display",
                             tip.element_handle()) != "none"
        page.keyboard.press("Tab")  # to the next point: the first tip closes
        assert page.evaluate("e => getComputedStyle(e).display", tip.element_handle()) == "none"
    assert problems == []


def test_screenshots_of_the_main_pages(db_url: str, tmp_path: Path) -> None:
    """Screenshots for a reader to look at (index, a task, a variant, claims); the database
    named by ARCHBENCH_SITE_DB (e.g. a quick suite's) when set, else a small realistic one."""
    source = os.environ.get("ARCHBENCH_SITE_DB")
    engine = db.connect(source) if source else _engine(db_url)
    if not source:
        _realistic(engine)
    site = render.build(engine, tmp_path / "site").parent
    tasks = sorted((site / "task").glob("*.html"), key=lambda p: (p.stem != "mqar", p.stem))
    archs = sorted((site / "arch").glob("*.html"), key=lambda p: (p.stem != "mamba", p.stem))
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _page([]) as page:
        page.set_viewport_size({"width": 1280, "height": 900})
        for name, path in (("index", site / "index.html"), ("task", tasks[0]),
                           ("variant", archs[0]), ("claims", site / "claims.html")):
            page.goto(path.resolve().as_uri())
            page.screenshot(path=str(SHOTS / f"{name}.jpg"), full_page=True, type="jpeg",
                            quality=70)
    assert all((SHOTS / f"{n}.jpg").stat().st_size > 1000
               for n in ("index", "task", "variant", "claims"))


def test_build_reads_no_registry_and_imports_no_torch(db_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    engine = _engine(db_url)
    _realistic(engine)
    code = ("import sys; from pathlib import Path; from harness import db, render; "
            f"render.build(db.connect({db_url!r}), Path({str(tmp_path / 'site')!r})); "
            "bad = [m for m in ('torch', 'architectures._common', 'architectures.backbone') "
            "if m in sys.modules]; "
            "t = sys.modules.get('tasks'); bad += ['task registry'] if t and t.REGISTRY._loaded "
            "else []; assert not bad, bad")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr


def test_index_overview_has_one_column_per_task_accuracy_first_with_ranks(db_url: str,
                                                                           tmp_path: Path) -> None:
    engine = _engine(db_url)
    db.start_run(engine, "r1", "a", "git:1", "fp0", 1, config={"model": {"d_model": 32}})
    db.store(engine, [_row(a, v) for a, v in (("mamba", 0.4), ("transformer", 0.9))])
    db.store(engine, [_row("mamba", 0.2, task_config={"seq_len": 12, "steps": 10})])
    db.store(engine, [_row(a, ms * n / 64, task="prefill_latency", metric="latency_ms",
                           unit="ms", higher_is_better=False, task_config={"seq_len": n},
                           ci_low=ms * n / 70, ci_high=ms * n / 60, extra={})
                      for a, ms in (("mamba", 1.0), ("transformer", 2.0)) for n in (64, 256)])
    index = render.build(engine, tmp_path / "site")
    html = index.read_text()
    overview = html.split('<h3 class="overview">Overview</h3>')[1].split(
        '<h3 class="overview">Boards</h3>')[0]
    heads = re.findall(r'<th data-kind="num" scope="col"><a href="\./task/([a-z_]+)\.html"',
                       overview)
    assert heads == ["mqar", "prefill_latency"]  # one column per task, accuracy first
    # the representative boards: the most variants (mqar steps 100), the longest length (256)
    assert "steps <b>100</b>" in overview and "steps <b>10</b>" not in overview
    assert "seq_len <b>256</b>" in overview and "seq_len <b>64</b>" not in overview
    assert overview.count("other setting:") == 2
    assert re.search(r">#1 </small><br><span class=\"val\">0\.900", overview)
    assert re.search(r">#1 </small><br><span class=\"val\">4\.00", overview)  # mamba, faster
    assert re.search(r">#2 </small><br><span class=\"val\">8\.00", overview)
