"""Values that one backend stores and another rejects are made portable before any write."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness import db, values
from tests.test_db import BACKENDS, _row, database_url


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request.param, tmp_path)


def _stored(url: str, *rows: dict) -> list[dict]:
    engine = db.connect(url)
    assert db.store(engine, rows) == len(rows)
    return db.results(engine)


def test_nan_in_json_columns_becomes_null_with_its_path(url: str) -> None:
    nan, inf = float("nan"), float("inf")
    (row,) = _stored(url, _row("c1", "ok", 2.0, extra={"loss": nan, "curve": [1.0, inf, -inf]},
                              summary={"mean": nan, "p90": 3.0}, samples=[1.0, nan],
                              task_config={"lr": inf}))
    assert row["extra"]["loss"] is None and row["extra"]["curve"] == [1.0, None, None]
    assert row["summary"] == {"mean": None, "p90": 3.0}
    assert row["samples"] == [1.0, None]
    assert row["task_config"] == {"lr": None}
    assert set(row["extra"]["non_finite"]) == {
        "extra.loss", "extra.curve[1]", "extra.curve[2]", "summary.mean", "samples[1]",
        "task_config.lr"}
    assert row["value"] == 2.0 and row["status"] == "ok"


def test_non_finite_paths_are_capped(url: str) -> None:
    (row,) = _stored(url, _row("c1", "ok", 1.0, samples=[float("nan")] * 30, extra=None))
    paths = row["extra"]["non_finite"]
    assert paths[:2] == ["samples[0]", "samples[1]"] and paths[-1] == "... 10 more"
    assert len(paths) == db.MAX_PATHS + 1


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_float_column_becomes_null_and_is_noted(url: str, bad: float) -> None:
    (row,) = _stored(url, _row("c1", "failed", bad, error="diverged", spread=np.float32(bad)))
    assert row["value"] is None and row["spread"] is None
    first, last = row["error"].splitlines()
    assert f"value was {bad!r}" in first and f"spread was {bad!r}" in first
    assert last == "diverged"  # the cause stays the last line (what the site shows)


def test_nul_bytes_are_stripped_and_noted(url: str) -> None:
    (row,) = _stored(url, _row("c1", "failed", None, error="boom\x00 at step 3",
                              extra={"log": "a\x00b", "k\x00": 1}))
    assert row["error"].splitlines()[-1] == "boom at step 3"
    assert "NUL bytes stripped from error" in row["error"]
    assert "NUL bytes stripped from extra.log" in row["error"]
    assert row["extra"] == {"log": "ab", "k": 1}


def test_overlong_strings_are_truncated_with_a_marker(url: str) -> None:
    long_a, long_b = "a" * 150, "a" * 149 + "b"
    rows = _stored(url, _row("c1", "ok", 1.0, arch=long_a), _row("c2", "ok", 1.0, arch=long_b))
    stored = [r["arch"] for r in rows]
    assert all(len(a) == 100 and a.startswith("a" * 91) for a in stored)
    assert stored[0] != stored[1]  # the digest keeps distinct names distinct
    assert stored[0] == values._truncate(long_a, 100) and stored[0][91] == db.TRUNCATION_MARK
    assert "arch truncated from 150 to 100 characters" in rows[0]["error"]
    engine = db.connect(url)
    db.start_run(engine, "r1", "s" * 250, "git:abc", "fp", 1)
    (run,) = db.runs(engine)
    assert len(run["suite"]) == 200 and run["suite"][191] == db.TRUNCATION_MARK


def test_numpy_and_other_objects_become_json(url: str) -> None:
    extra = {"curve": np.arange(3, dtype=np.float32), "best": np.float64(0.5),
             "steps": np.int64(7), "flag": np.bool_(True), "where": Path("/tmp/x"),
             "nan_array": np.array([1.0, np.nan]), (1, 2): "tuple key"}
    (row,) = _stored(url, _row("c1", "ok", np.float64(1.5), extra=extra, seed=np.int64(3),
                              n_samples=np.int32(3), higher_is_better=np.bool_(False)))
    got = row["extra"]
    assert got["curve"] == [0.0, 1.0, 2.0] and got["best"] == 0.5 and got["steps"] == 7
    assert got["flag"] is True and got["where"] == repr(Path("/tmp/x"))
    assert got["nan_array"] == [1.0, None] and got["non_finite"] == ["extra.nan_array[1]"]
    assert got["(1, 2)"] == "tuple key"
    assert row["value"] == 1.5 and row["seed"] == 3 and row["higher_is_better"] is False


@pytest.mark.parametrize("seed", [2**31, -(2**31) - 1, 2**63])
def test_out_of_range_integers_are_refused_before_writing(url: str, seed: int) -> None:
    engine = db.connect(url)
    with pytest.raises(ValueError, match=r"results\.seed = .* 32-bit"):
        db.store(engine, [_row("c0", "ok", 1.0), _row("c1", "ok", 1.0, seed=seed)])
    assert db.count(engine) == 0


def test_largest_seed_is_stored(url: str) -> None:
    (row,) = _stored(url, _row("c1", "ok", 1.0, seed=2**31 - 1))
    assert row["seed"] == 2**31 - 1


def test_other_tables_are_sanitized(url: str) -> None:
    engine = db.connect(url)
    db.ensure_hardware(engine, "fp", {"cpu": "x\x00y", "ghz": float("nan")})
    assert db.hardware(engine) == {"fp": {"cpu": "xy", "ghz": None}}
    db.store_peak(engine, "fp", "cpu", "float32", 1,
                  {"flops_per_s": float("nan"), "method": "m", "n_samples": 3})
    assert db.peaks(engine) == {}  # a non-finite peak is no yardstick
    db.store_peak(engine, "fp", "cpu", "float32", 1,
                  {"flops_per_s": np.float64(2e9), "method": "m", "n_samples": np.int64(3)})
    db.store_peak(engine, "fp", "cpu", "float32", 1,
                  {"flops_per_s": 3e9, "method": "m", "n_samples": 3})  # replaces
    assert db.peaks(engine) == {("fp", "cpu", "float32", 1): 3e9}
    db.replace_derived(engine, "fp", [{
        "task": "t", "metric": "m", "series": "s", "kind": "scaling_exponent", "arch": "a",
        "other_arch": None, "value": float("inf"), "unit": "", "method": "fit",
        "points": {"x": [1, 2], "y": [np.float32(1.0), float("nan")]},
        "code_version": "git:abc"}])
    (fig,) = db.derived(engine)
    assert fig["value"] is None and fig["points"] == {"x": [1, 2], "y": [1.0, None]}


def test_sanitize_leaves_the_callers_row_alone() -> None:
    row = _row("c1", "ok", float("nan"), extra={"a": float("nan")})
    clean = db.sanitize_result(row)
    assert math.isnan(row["value"]) and math.isnan(row["extra"]["a"])
    assert clean["value"] is None and clean["extra"]["a"] is None
