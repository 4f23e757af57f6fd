"""CSV export: text a spreadsheet would run as a formula is neutralised, numbers are not, and
the output path is checked before anything is read or written."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from harness import db, export
from harness.outputs import OutputError
from tests.test_site import _row

PREFIXES = ["=", "+", "-", "@", "\t", "\r"]


@pytest.fixture
def engine(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    rows = [_row(f"{p}cmd|' /C calc'!A0", "prefill_latency", "latency_ms", -0.5, spread=-0.25,
                 method=f"{p}HYPERLINK(\"http://x\")", error=f"{p}1+2", cell_id=f"c{i}")
            for i, p in enumerate(PREFIXES)]
    rows.append(_row("transformer", "prefill_latency", "latency_ms", 1.5, seed=-3,
                     arch_config={"=k": -1}, samples=[-1.0, 2.0], method="plain text"))
    db.store(engine, rows)
    return engine


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_formula_prefixes_are_quoted_in_text_cells(engine, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert export.to_csv(engine, out) == len(PREFIXES) + 1
    rows = _read(out)
    for p, row in zip(PREFIXES, rows, strict=False):
        assert row["arch"] == f"'{p}cmd|' /C calc'!A0"
        assert row["method"] == f"'{p}HYPERLINK(\"http://x\")"
        assert row["error"] == f"'{p}1+2"
    plain = rows[-1]
    assert plain["arch"] == "transformer" and plain["method"] == "plain text"
    assert plain["arch_config"] == '{"=k": -1}'  # JSON starts with '{': nothing to guard
    assert plain["samples"] == "[-1.0, 2.0]"


def test_negative_numbers_stay_numbers(engine, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    export.to_csv(engine, out)
    rows = _read(out)
    assert {r["value"] for r in rows[:-1]} == {"-0.5"}
    assert {r["spread"] for r in rows[:-1]} == {"-0.25"}
    assert rows[-1]["seed"] == "-3"
    assert "'-0.5" not in out.read_text()


def test_cell_rules() -> None:
    assert export._cell(-0.5) == -0.5 and export._cell(-3) == -3
    assert export._cell(None) == "" and export._cell(True) is True
    assert export._cell("-0.5") == "'-0.5"  # text that looks like a number is still text
    assert export._cell("a=b") == "a=b" and export._cell("") == ""
    assert export._cell({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}'


def test_refuses_a_folder_the_database_and_unwritable_paths(engine, db_url: str,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    def no_work(*_args, **_kw):
        raise AssertionError("read the database before checking --out")

    monkeypatch.setattr(export.db, "results", no_work)
    database = tmp_path / "test.db"
    size = database.stat().st_size
    with pytest.raises(OutputError, match="is a folder"):
        export.to_csv(engine, tmp_path)
    with pytest.raises(OutputError, match="database being read") as err:
        export.to_csv(engine, database)
    assert "\n" not in str(err.value) and str(database) in str(err.value)
    assert database.stat().st_size == size
    other = tmp_path / "other.sqlite3"
    other.write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(OutputError, match="SQLite database"):
        export.to_csv(engine, other)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        export.to_csv(engine, a_file / "r.csv")
    monkeypatch.setattr(export.os, "access", lambda *_a, **_k: False)  # root ignores modes
    with pytest.raises(OutputError, match="no permission"):
        export.to_csv(engine, tmp_path / "new.csv")


def test_a_failed_export_keeps_the_previous_file(engine, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.csv"
    out.write_text("previous export\n")

    def broken(value: object) -> object:
        raise RuntimeError("crashed mid-file")

    monkeypatch.setattr(export, "_cell", broken)
    with pytest.raises(RuntimeError, match="mid-file"):
        export.to_csv(engine, out)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no part file
