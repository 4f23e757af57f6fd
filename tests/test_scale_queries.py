"""The site, the exports and derive read through harness.queries (only the needed columns, the
newest row per key in SQL, samples streamed as stored JSON text, derive recomputing only what a
run touched); each is checked against a plain reference computed in Python from every row, as
the code before them did. On SQLite, and on PostgreSQL where ARCHBENCH_TEST_PG_URL is set."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import boards, claims, db, derive, export, pages, queries, render, results
from tests.conftest import shipped_declarations, store_shipped_catalog
from tests.test_db import BACKENDS, database_url

LENGTHS = [32, 64, 128, 256]
ARCHS = ["transformer", "mamba", "rwkv"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


def _row(run: int, fp: str, arch: str, task: str, metric: str, value: float | None,
         **more: Any) -> dict[str, Any]:
    return {"run_id": f"run{run}", "cell_id": f"{run}-{fp}-{arch}-{task}-{more.get('seed', 0)}-"
            f"{json.dumps(more.get('task_config', {}), sort_keys=True)}",
            "config_hash": f"cfg-{task}", "code_version": f"git:{run}",
            "hardware_fingerprint": fp, "arch": arch, "arch_version": 1,
            "arch_config": {"n_layers": 2, "d_model": 32}, "task": task, "task_version": 1,
            "task_config": {}, "seed": 0, "metric": metric, "unit": "ms", "value": value,
            "higher_is_better": False, "n_samples": 5, "status": "ok", "method": "t",
            "device": "cpu", "dtype": "float32", "threads": 1, **more}


def _run_rows(run: int, fps: tuple[str, ...] = ("fpA", "fpB"),
              tasks: tuple[str, ...] = ("prefill_latency", "decode_latency", "flops", "mqar",
                                        "energy")) -> list[dict[str, Any]]:
    """One run's rows: sweeps with timing marks, FLOP counts, seeds of an accuracy task, a
    failure, text a spreadsheet would run, non-ASCII text, JSON null and SQL NULL samples."""
    rows = []
    for fp in fps:
        for k, arch in enumerate(ARCHS):
            slope = 1 + k * 0.5
            for x in LENGTHS:
                y = (x / 32) ** slope * (1 + run / 10)
                if "prefill_latency" in tasks:
                    # the same config with its keys in another order in odd runs
                    cfg = ({"seq_len": x, "batch_size": 1} if run % 2 == 0
                           else {"batch_size": 1, "seq_len": x})
                    extra = {"noisy": x == 64, "contended": arch == "mamba" and x == 128,
                             "contention": {"reasons": ["load"], "score": 0.5},
                             "ci_met": x != 256, "ci_target": 0.05, "ref_ratio": 1.5,
                             "ref_ms": 2.0, "note": "ünïcode ✓" if x == 32 else "plain"}
                    samples = [y * (1 + i / 100) for i in range(7)]
                    rows.append(_row(run, fp, arch, "prefill_latency", "latency_ms", y,
                                     task_config=cfg, samples=samples, spread=y / 10,
                                     ci_low=y * 0.9, ci_high=y * 1.1, extra=extra,
                                     summary={"median": y, "iqr": y / 10},
                                     volatile={"load": [0.1, 0.2]}))
                    rows.append(_row(run, fp, arch, "prefill_latency", "tokens_per_s", 1e4 / y,
                                     task_config=cfg, unit="tokens/s", higher_is_better=True,
                                     samples=None))
                if "flops" in tasks:
                    rows.append(_row(run, fp, arch, "flops", "forward_flops_per_token",
                                     1e6 * x, unit="FLOP/token", higher_is_better=None,
                                     task_config={"seq_len": x, "batch_size": 1}))
                if "decode_latency" in tasks:
                    rows.append(_row(run, fp, arch, "decode_latency", "latency_ms", y / 3,
                                     task_config={"context_len": x, "batch_size": 1},
                                     method="=HYPERLINK(\"x\"), with, commas",
                                     error="-1+2" if x == 32 else None))
            if "mqar" in tasks:
                for seed in (0, 1, 2):
                    rows.append(_row(run, fp, arch, "mqar", "accuracy", 0.5 + seed / 10 + k / 20,
                                     unit="fraction", higher_is_better=True, seed=seed,
                                     task_config={"n_pairs": 4},
                                     extra={"chance": 0.1, "floor": 0.2, "lr": 0.001,
                                            "lr_grid": [0.001, 0.01], "num_params": 1000,
                                            "token_budget": 5000, "wilson95": [0.4, 0.6],
                                            "not_converged": seed == 1}))
            if "energy" in tasks:
                rows.append(_row(run, fp, arch, "energy", "energy_per_token_j", None,
                                 status="failed" if arch == "rwkv" else "unavailable", unit="",
                                 error="Traceback\nRuntimeError: <no RAPL>"))
    return rows


def _store(engine: db.Engine, rows: list[dict[str, Any]], run: int, fp: str = "fpA") -> None:
    db.start_run(engine, f"run{run}", "quick" if run % 2 else "full", f"git:{run}", fp, 1)
    db.store(engine, rows)
    db.finish_run(engine, f"run{run}", "finished")


@pytest.fixture
def engine(url: str) -> Iterator[db.Engine]:
    engine = db.connect(url)
    store_shipped_catalog(engine)
    for fp in ("fpA", "fpB"):
        db.ensure_hardware(engine, fp, {"cpu_model": f"CPU {fp}", "logical_cpus": 4})
        db.store_peak(engine, fp, "cpu", "float32", 1,
                      {"flops_per_s": 1e10, "method": "matmul", "n_samples": 3})
    # the oldest row of (decode_latency, latency_ms) is a failure without a unit
    _store(engine, [_row(0, "fpA", "transformer", "decode_latency", "latency_ms", None,
                         status="timeout", unit="", task_config={"context_len": 32})], 0)
    for run in (1, 2, 3):
        _store(engine, _run_rows(run), run)
    yield engine
    engine.dispose()


# --- the reference: every row, read as the code before harness.queries read it ---------------


def _reference_figures(rows: list[dict[str, Any]], peaks: dict, version: str) -> dict:
    decl = shipped_declarations()
    computed = derive.compute(rows, version, decl)
    for extra in (derive.achieved(rows, peaks, version, decl), derive.seed_means(rows, version)):
        for fp, more in extra.items():
            computed.setdefault(fp, []).extend(more)
    return computed


def _sorted(rows: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True,
                             default=str) for r in rows)


def _latest(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """Newest row per (hardware, architecture, task, metric); rows come oldest first."""
    out: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        out[(row["hardware_fingerprint"], row["arch"], row["task"], row["metric"])] = row
    return out


def _reference_site(engine: db.Engine, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The site as render_into writes it when its boards read every row (db.results) and the
    claims are evaluated by claims.evaluate."""
    with monkeypatch.context() as m:
        m.setattr(render.queries, "board_rows", lambda engine: db.results(engine))
        render.build(engine, out)


def _reference_csv(engine: db.Engine, out: Path, **filters: Any) -> None:
    columns = [*db.PROVENANCE_COLUMNS, "samples"]
    with out.open("x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in results.rows(engine, **filters):
            writer.writerow([export._cell(row[c]) for c in columns])


def _reference_jsonl(engine: db.Engine, out: Path, **filters: Any) -> None:
    with out.open("x", encoding="utf-8", newline="\n") as f:
        for row in results.rows(engine, **filters):
            f.write(json.dumps(row, default=export._jsonable, ensure_ascii=False,
                               allow_nan=False))
            f.write("\n")


def _reference_parquet_rows(engine: db.Engine, **filters: Any) -> list[dict[str, Any]]:
    import pyarrow as pa

    rows = results.rows(engine, **filters)
    for row in rows:
        for name in results.JSON_COLUMNS:
            row[name] = export._json_text(row[name])
    return pa.Table.from_pylist(rows, schema=export._parquet_schema()).to_pylist()


# --- the queries -----------------------------------------------------------------------------


def test_newest_rows_per_key_match_the_python_fold(engine) -> None:
    every = db.results(engine)
    want = _latest(every)
    got = queries.latest_rows(engine)
    assert [r["id"] for r in got] == sorted(r["id"] for r in want.values())
    keep = queries.columns_except()
    assert "samples" not in keep and "volatile" not in keep and "summary" not in keep
    for row in got:
        key = (row["hardware_fingerprint"], row["arch"], row["task"], row["metric"])
        assert row == {c: want[key][c] for c in keep}
    assert _latest(got).keys() == want.keys()
    assert queries.count_results(engine) == len(every)


def test_sweep_rows_give_the_same_series_and_marks(engine) -> None:
    every = db.results(engine)
    decl = derive.declared(engine)
    assert decl == shipped_declarations() and decl.swept
    candidates = queries.sweep_rows(engine, sorted(decl.swept), queries.columns_except())
    assert len(candidates) < len(every)
    assert derive.sweep_series(candidates, decl) == derive.sweep_series(every, decl)
    assert derive.sweep_series(every, decl)
    units = queries.first_units(engine)
    assert units[("decode_latency", "latency_ms")] == ""  # the oldest row: a failure
    for (task, metric), unit in units.items():
        assert unit == next(r["unit"] for r in every if r["task"] == task
                            and r["metric"] == metric)


def test_seed_and_shape_rows_give_the_same_figures(engine) -> None:
    every = db.results(engine)
    assert (derive.seed_means(queries.seed_rows(engine), "v")
            == derive.seed_means(every, "v"))
    peaks = db.peaks(engine)
    decl = derive.declared(engine)
    inputs = decl.inputs(derive.FLOP_ROLE, derive.SPEED_ROLE)
    assert (derive.achieved(queries.shape_rows(engine, inputs), peaks, "v", decl)
            == derive.achieved(every, peaks, "v", decl) != {})
    pairs = {("fpB", "mqar"), ("fpA", "prefill_latency")}
    only = queries.seed_rows(engine, pairs)
    assert {(r["hardware_fingerprint"], r["task"]) for r in only} == pairs
    assert queries.seed_rows(engine, set()) == []


def test_full_refresh_equals_the_reference(engine) -> None:
    every = db.results(engine)
    reference = _reference_figures(every, db.peaks(engine), "git:t")
    n = derive.refresh(engine, "git:t")
    assert n == sum(len(v) for v in reference.values()) > 0
    want = [{"hardware_fingerprint": fp, **row} for fp, rows in reference.items()
            for row in rows]
    assert _sorted(db.derived(engine)) == _sorted(want)


def test_incremental_refresh_equals_a_full_recompute(engine, tmp_path: Path) -> None:
    derive.refresh(engine, "git:t")
    # a new run on one machine: new sweep points and seeds of two tasks, a new matmul peak
    new = _run_rows(4, fps=("fpA",), tasks=("prefill_latency", "mqar"))
    _store(engine, new, 4)
    db.store_peak(engine, "fpA", "cpu", "float32", 1,
                  {"flops_per_s": 2e10, "method": "matmul", "n_samples": 3})
    assert queries.touched_pairs(engine, "run4") == {("fpA", "prefill_latency"),
                                                     ("fpA", "mqar")}
    n = derive.refresh(engine, "git:t", run_id="run4")
    incremental = db.derived(engine)
    site = render.build(engine, tmp_path / "incremental").parent
    assert derive.refresh(engine, "git:t") == n  # the same count as a full recompute
    assert _sorted(incremental) == _sorted(db.derived(engine))
    full = render.build(engine, tmp_path / "full").parent
    for page in ("index.html", "scaling.html", "claims.html"):
        assert (site / page).read_bytes() == (full / page).read_bytes()
    # a run that stored nothing changes nothing
    before = _sorted(db.derived(engine))
    assert derive.refresh(engine, "git:other", run_id="no-such-run") == n
    assert _sorted(db.derived(engine)) == before
    # figures the run did not touch keep the code version that computed them
    derive.refresh(engine, "git:later", run_id="run4")
    versions = {(d["hardware_fingerprint"], d["task"], d["kind"]): d["code_version"]
                for d in db.derived(engine)}
    assert versions[("fpA", "mqar", "seed_mean")] == "git:later"
    assert versions[("fpA", "prefill_latency", "achieved_flops_per_s")] == "git:later"
    assert versions[("fpB", "mqar", "seed_mean")] == "git:t"
    assert versions[("fpA", "decode_latency", "scaling_exponent")] == "git:t"


# --- what the commands write -----------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != render.SITE_MARKER}


CLAIMS = """\
claims:
  - id: full-suite
    claim: Attention recalls best.
    paper: {title: T, authors: A, year: 2023, url: "https://arxiv.org/abs/1"}
    suite: zoo
    task: mqar
    metric: accuracy
    predicate:
      - {arch: rwkv, at_least: 0.65}
      - {better: rwkv, than: transformer, by: 0.1}
  - id: quick-suite
    claim: The same, from the quick suite's rows.
    paper: {title: T, authors: A, year: 2023, url: "https://arxiv.org/abs/1"}
    suite: quick
    task: mqar
    metric: accuracy
    predicate:
      - {better: mamba, than: transformer, by: 0.05}
  - id: timing
    claim: Mamba is slower.
    paper: {title: T, authors: A, year: 2023, url: "https://arxiv.org/abs/1"}
    suite: zoo
    task: prefill_latency
    metric: latency_ms
    where: {seq_len: 256}
    predicate:
      - {better: transformer, than: mamba, by: 0}
  - id: absent
    claim: Nobody ran this.
    paper: {title: T, authors: A, year: 2023, url: "https://arxiv.org/abs/1"}
    suite: zoo
    task: parity
    metric: accuracy
    predicate:
      - {arch: lstm, at_least: 0.9}
"""


def test_claims_on_the_site_rows_equal_claims_on_every_row(engine, tmp_path: Path) -> None:
    """The site evaluates claims on queries.board_rows (newest rows per setting, seed and
    suite) rather than every row: the same verdicts and evidence."""
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS)
    shipped = claims.load(path)
    runs = queries.run_facts(engine)
    rows = [{**r, "suite": runs[r["run_id"]]["suite"]} for r in queries.board_rows(engine)]
    want = claims.evaluate(engine, shipped)
    got = claims.evaluate(engine, shipped, rows=rows)
    assert [(v.claim.id, v.machine, v.status, v.reason, v.evidence) for v in got] == \
        [(v.claim.id, v.machine, v.status, v.reason, v.evidence) for v in want]
    assert {v.status for v in want} == {claims.REPRODUCED, claims.NOT_REPRODUCED,
                                        claims.NOT_RUN}


def test_boards_from_the_query_equal_boards_from_every_row(engine) -> None:
    """queries.board_rows keeps every row the boards show: the same boards as from all rows
    (newest version, newest finished row per seed, seed means)."""
    runs, catalog = queries.run_facts(engine), db.catalog(engine)
    got = boards.build_boards(queries.board_rows(engine), runs, catalog, pages.cell)
    want = boards.build_boards(db.results(engine), runs, catalog, pages.cell)
    def plain(bs: list[dict]) -> list[dict]:  # the rows behind the headline: by id
        return [{**b, "head_rows": [r["id"] for r in b["head_rows"]]} for b in bs]

    assert plain(got) == plain(want) and len(got) > 10
    assert len(queries.board_rows(engine)) < len(db.results(engine))


def test_site_is_byte_identical_to_the_reference(engine, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    derive.refresh(engine, "git:t")
    built = render.build(engine, tmp_path / "site").parent
    _reference_site(engine, tmp_path / "reference", monkeypatch)
    got, want = _files(built), _files(tmp_path / "reference")
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name
    assert b"contended" in got["scaling.html"] and b"noisy" in got["scaling.html"]


FILTERS = [{}, {"task": ["prefill_latency", "decode_latency"], "status": "ok"},
           {"arch": "mamba", "suite": "quick"}, {"status": "failed"}]


@pytest.mark.parametrize("filters", FILTERS)
def test_csv_and_jsonl_are_identical_to_the_reference(engine, tmp_path: Path,
                                                      filters: dict) -> None:
    for fmt, reference in (("csv", _reference_csv), ("jsonl", _reference_jsonl)):
        n = export.export(engine, tmp_path / f"new.{fmt}", fmt, **filters)
        reference(engine, tmp_path / f"ref.{fmt}", **filters)
        assert n == len(results.rows(engine, **filters))
        got, want = (tmp_path / f"new.{fmt}").read_bytes(), (tmp_path / f"ref.{fmt}").read_bytes()
        assert got == want, fmt
    if not filters:
        assert "ünïcode ✓".encode() in got  # JSON Lines keeps non-ASCII text as it is


@pytest.mark.parametrize("filters", FILTERS[:3])
def test_parquet_holds_the_reference_rows(engine, tmp_path: Path, filters: dict) -> None:
    import pyarrow.parquet as pq

    export.export(engine, tmp_path / "r.parquet", "parquet", **filters)
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema == export._parquet_schema()
    assert table.to_pylist() == _reference_parquet_rows(engine, **filters)


def test_exports_fall_back_to_encoding_where_stored_text_differs(url: str,
                                                                 tmp_path: Path) -> None:
    """Text the fast paths must not pass through: NUL-free marks, nested objects in lists,
    escapes, a JSON scalar in a JSON column, commas and quotes in plain fields."""
    engine = db.connect(url)
    rows = [_row(1, "fp", "a", "t", "m", 1.0, samples=[{"b": 1, "a": 2}, 1.5],
                 extra={"z": "quote \" and \\ back", "a": [1, {"y": 2, "x": 3}]},
                 method='has "quotes", commas'),
            _row(1, "fp", "b", "t", "m", 2.0, samples=[], extra={"k": "line\nbreak"},
                 summary={"b": None, "a": 1}),
            _row(1, "fp", "c", "t", "m", -3.0, samples=[-1.0], extra=None, volatile=None)]
    rows.append({**_row(1, "fp", "d", "t", "m", 4.0), "cell_id": "scalar", "extra": 5})
    _store(engine, rows, 1, "fp")
    for fmt, reference in (("csv", _reference_csv), ("jsonl", _reference_jsonl)):
        export.export(engine, tmp_path / f"new.{fmt}", fmt)
        reference(engine, tmp_path / f"ref.{fmt}")
        assert (tmp_path / f"new.{fmt}").read_bytes() == (tmp_path / f"ref.{fmt}").read_bytes()
    import pyarrow.parquet as pq

    export.export(engine, tmp_path / "r.parquet", "parquet")
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == _reference_parquet_rows(engine)
    engine.dispose()


def test_jsonl_refuses_non_finite_numbers_as_before(db_url: str, tmp_path: Path) -> None:
    """Rows stored before values were sanitized may hold NaN in their JSON: JSON Lines
    refuses them, as it did."""
    engine = db.connect(db_url)
    _store(engine, [_row(1, "fp", "a", "t", "m", 1.0, samples=[1.0])], 1, "fp")
    r = db.Result.__table__
    with engine.begin() as conn:
        conn.execute(r.update().values(samples=[float("nan"), 1.0]))
    with pytest.raises(ValueError):
        _reference_jsonl(engine, tmp_path / "ref.jsonl")
    with pytest.raises(ValueError):
        export.export(engine, tmp_path / "new.jsonl", "jsonl")
    assert not (tmp_path / "new.jsonl").exists()
