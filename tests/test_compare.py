"""`archbench compare A B`: runs, code versions and databases, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness import db
from harness.cli import main
from harness.ids import setting_id
from tests.test_db import _row


def _store(engine, run: str, version: str, scale: float, fp: str = "fp") -> None:
    rng = np.random.default_rng(sum(map(ord, run)) + int(scale * 100))  # not hash(): salted
    db.start_run(engine, run, "s", version, fp, 2)
    for arch in ("mamba", "transformer"):
        samples = list(10.0 * scale * np.exp(rng.normal(0, 0.01, 30)))
        row = _row(f"{arch}-{run}", "ok", float(np.median(samples)), run_id=run,
                   code_version=version, hardware_fingerprint=fp, arch=arch, samples=samples,
                   higher_is_better=False)
        row["setting_id"] = setting_id(row)
        db.store(engine, [row])


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "c.db"
    engine = db.connect(str(path))
    _store(engine, "run1", "git:aaa", 1.0)
    _store(engine, "run2", "git:bbb", 1.3)  # 30% slower
    return path


def test_two_runs_as_a_table_and_as_json(database: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(database), "compare", "run1", "run2"]) == 0
    out = capsys.readouterr().out
    assert "A: run run1" in out and "B: run run2" in out
    assert out.count("regression") == 2
    assert any(f"1.{d}" in out for d in ("29", "3 ", "30", "31"))
    assert main(["--db", str(database), "compare", "git:aaa", "git:bbb", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["a"] == "code git:aaa" and table["same_machine"]
    assert {r["arch"] for r in table["rows"]} == {"mamba", "transformer"}
    for row in table["rows"]:
        assert row["change"] == "regression" and row["p_value"] < 1e-6
        assert row["ratio"] == pytest.approx(1.3, rel=0.02)


def test_two_databases_from_two_machines(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _store(db.connect(str(a)), "ra", "git:x", 1.0, fp="fpA")
    _store(db.connect(str(b)), "rb", "git:x", 0.5, fp="fpB")
    assert main(["--db", str(a), "compare", str(a), str(b), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert not table["same_machine"] and len(table["rows"]) == 2
    assert {r["change"] for r in table["rows"]} == {"improvement"}
    assert {(r["machine_a"], r["machine_b"]) for r in table["rows"]} == {("fpA", "fpB")}


def test_an_unknown_side_is_one_line_exit_2(database: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", str(database), "compare", "run1", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "B: 'nope'" in err and "git:aaa" in err
