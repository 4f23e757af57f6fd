"""archbench merge: databases from several machines combine into their union, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import db, results
from harness.merge import merge
from tests.test_site import _row

COUNTS = ("results_added", "results_skipped", "runs_added", "hardware_added")


def machine(url: str, fp: str, own_run: str) -> db.Engine:
    """A machine's database: its own run, plus the shared run 'shared' (copied from another
    machine earlier) holding one finished and one failed result of hardware 'fp-shared'."""
    engine = db.connect(url)
    for f in (fp, "fp-shared"):
        db.ensure_hardware(engine, f, {"cpu_model": f"CPU {f}"})
    db.store_peak(engine, fp, "cpu", "float32", 1,
                  {"flops_per_s": 2e9, "method": "matmul", "n_samples": 3})
    db.start_run(engine, own_run, "quick", "git:t", fp, 2)
    db.store(engine, [_row("transformer", "prefill_latency", "latency_ms", 1.0, run_id=own_run,
                           hardware_fingerprint=fp, samples=[1.0], arch_config={"d": 8}),
                      _row("mamba", "energy", "energy_per_token_j", None, status="failed",
                           error="boom", run_id=own_run, hardware_fingerprint=fp)])
    return engine


def shared(engine: db.Engine, source: db.Engine | None = None) -> None:
    """The overlapping run: copied verbatim (same created_at) from ``source`` if given."""
    if source is None:
        db.start_run(engine, "shared", "full", "git:t", "fp-shared", 2)
        db.store(engine, [_row("hyena", "prefill_latency", "latency_ms", 3.0, run_id="shared",
                               hardware_fingerprint="fp-shared"),
                          _row("hyena", "energy", "energy_per_token_j", None, status="failed",
                               error="x", run_id="shared", hardware_fingerprint="fp-shared")])
        return
    from harness.merge import merge_engine
    only = db.connect("sqlite://")
    merge_engine(source, only)  # everything of source ...
    with db._writing(only) as conn:  # ... less its own run
        for table in (db.Result.__table__, db.Run.__table__):
            conn.execute(table.delete().where(table.c.run_id != "shared"))
    merge_engine(only, engine)


def _identities(engine: db.Engine) -> list[tuple]:
    return sorted((r["run_id"], r["cell_id"], r["hardware_fingerprint"], r["metric"],
                   r["status"], r["created_at"]) for r in db.results(engine))


@pytest.fixture
def two(tmp_path: Path) -> tuple[str, str]:
    a_url, b_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    a = machine(a_url, "fpA", "runA")
    shared(a)
    b = machine(b_url, "fpB", "runB")
    shared(b, source=a)
    assert db.count(a) == db.count(b) == 4
    return a_url, b_url


def test_merge_gives_the_union_without_duplicates(two, tmp_path: Path) -> None:
    a_url, b_url = two
    a, b = db.connect(a_url), db.connect(b_url)
    union = sorted(set(_identities(a)) | set(_identities(b)))
    assert len(union) == 6  # 2 + 2 of their own, 2 shared
    into = f"sqlite:///{tmp_path / 'all.db'}"
    counts = merge([a_url, b_url], into)
    assert counts == {"results_added": 6, "results_skipped": 2, "runs_added": 3,
                      "hardware_added": 3}
    dst = db.connect(into)
    assert _identities(dst) == union
    assert sorted(r["run_id"] for r in db.runs(dst)) == ["runA", "runB", "shared"]
    assert db.hardware(dst) == {**db.hardware(a), **db.hardware(b)}
    assert set(db.peaks(dst)) == set(db.peaks(a)) | set(db.peaks(b))
    # provenance kept: each run and result keeps its own hardware and timestamps
    runs = {r["run_id"]: r for r in db.runs(dst)}
    assert runs["runB"] == next(r for r in db.runs(b) if r["run_id"] == "runB")
    src = results.load(a, suite="quick")
    got = results.load(dst, suite="quick", arch="transformer")
    row = got[got["run_id"] == "runA"].iloc[0]
    want = src[src["arch"] == "transformer"].iloc[0]
    for col in ("hardware_fingerprint", "created_at", "samples", "arch_config", "value"):
        assert row[col] == want[col]


def test_merge_is_idempotent_and_into_itself_adds_nothing(two, tmp_path: Path) -> None:
    a_url, b_url = two
    into = f"sqlite:///{tmp_path / 'all.db'}"
    merge([a_url, b_url], into)
    before = _identities(db.connect(into))
    again = merge([a_url, b_url, into], into)
    assert again == {"results_added": 0, "results_skipped": 14, "runs_added": 0,
                     "hardware_added": 0}
    assert _identities(db.connect(into)) == before
    assert merge([a_url], a_url)["results_added"] == 0
    assert db.count(db.connect(a_url)) == 4


def test_a_second_finished_copy_of_one_run_is_not_copied(two, tmp_path: Path) -> None:
    """Same cell, hardware, run and metric finished on both sides (stored apart): the
    destination keeps its own; a re-measurement by another run is history and is added, and
    so is a failed attempt."""
    a_url, b_url = two
    other = db.connect(f"sqlite:///{tmp_path / 'c.db'}")
    db.start_run(other, "runC", "quick", "git:t", "fpA", 1)
    db.store(other, [_row("transformer", "prefill_latency", "latency_ms", 9.0, run_id="runA",
                          hardware_fingerprint="fpA"),
                     _row("transformer", "prefill_latency", "latency_ms", 7.0, run_id="runC",
                          hardware_fingerprint="fpA"),
                     _row("transformer", "prefill_latency", "latency_ms", None,
                          status="timeout", run_id="runC", hardware_fingerprint="fpA",
                          cell_id="transformer-prefill_latency-2")])
    counts = merge([f"sqlite:///{tmp_path / 'c.db'}"], a_url)
    assert counts == {"results_added": 2, "results_skipped": 1, "runs_added": 1,
                      "hardware_added": 0}
    a = db.connect(a_url)
    values = {(r["run_id"], r["value"]) for r in db.results(a)
              if r["cell_id"] == "transformer-prefill_latency" and r["status"] == "ok"}
    assert values == {("runA", 1.0), ("runC", 7.0)}


def test_merge_into_a_new_file_creates_the_schema(two, tmp_path: Path) -> None:
    a_url, _ = two
    target = tmp_path / "sub" / "new.db"
    counts = merge([a_url], str(target))  # a bare path is a SQLite file
    assert counts["results_added"] == 4 and target.exists()
    assert sorted(r["id"] for r in db.results(db.connect(str(target)))) == [1, 2, 3, 4]


def test_cli_merge_and_export_formats(two, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    """`archbench merge A B --into C`, then `export --format` of C round-trips through pandas."""
    from harness.cli import main

    a, b = two
    into = tmp_path / "cli-merged.db"
    assert main(["merge", a, b, "--into", str(into)]) == 0
    assert "results added" in capsys.readouterr().out
    merged = results.load(str(into))
    assert len(merged) == len(results.load(a)) + len(results.load(b)) - _overlap(a, b)
    for fmt in ("parquet", "jsonl", "sqlite"):
        out = tmp_path / f"export.{fmt}"
        assert main(["--db", str(into), "export", "--format", fmt, "--out", str(out)]) == 0
        assert out.is_file() and out.stat().st_size > 0
    assert main(["--db", str(into), "export", "--format", "csv", "--out",
                 str(tmp_path / "x.csv"), "--since", "not-a-date"]) == 2
    assert "--since" in capsys.readouterr().err


def _overlap(a: str, b: str) -> int:
    """Rows of ``b`` that ``a`` already holds (the same identity)."""
    return len(set(_identities(db.connect(a))) & set(_identities(db.connect(b))))


def test_metadata_nightlies_and_change_points_are_merged_once(two, tmp_path: Path) -> None:
    """What the site reads besides results comes along: variants, tasks and metric specs (by
    name and digest), nightlies and change points; merging twice adds nothing."""
    a_url, _ = two
    src = db.connect(a_url)
    db.store_catalog(src, [{"name": "mamba", "digest": "d1", "version": 1, "family": "ssm",
                            "causal": True, "papers": ["Mamba"], "config_keys": ["d_state"],
                            "doc": "Selective SSM."}],
                     [{"name": "mqar", "digest": "t1", "version": 3, "kind": "accuracy",
                       "headline": "accuracy", "config": {"seq_len": 64}, "ranked": True,
                       "unranked_reason": "", "needs_causal": True, "doc": "Recall.",
                       "metrics": [{"name": "accuracy", "unit": "fraction",
                                    "higher_is_better": True, "doc": "exact match"}]}])
    db.start_nightly(src, "n1", "fpA", "git:t", {"suites": ["quick"]})
    db.store_change_point(src, {"hardware_fingerprint": "fpA", "setting_id": "s1",
                                "metric": "latency_ms", "arch": "mamba", "task": "prefill",
                                "run_id": "runA", "change": "regression", "confirmed": True,
                                "confidence": "high", "method": "test", "nightly_id": "n1"})
    target = tmp_path / "meta.db"
    for _ in range(2):
        merge([a_url], str(target))
    into = db.connect(str(target))
    stored = db.catalog(into)
    assert stored["architectures"]["mamba"]["papers"] == ["Mamba"]
    assert stored["tasks"]["mqar"]["metrics"][0]["unit"] == "fraction"
    assert [n["nightly_id"] for n in db.nightlies(into)] == ["n1"]
    assert [(p["setting_id"], p["confirmed"]) for p in db.change_points(into)] == [("s1", True)]
