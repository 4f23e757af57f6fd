"""The capability heat map states what a score means: chance, floor, shading from the floor,
not-converged and not-learned-in-range marks, unranked tasks with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import db, render
from tests.test_site import _row


def _acc(arch: str, task: str, value: float, metric: str = "accuracy", **extra) -> dict:
    return _row(arch, task, metric, value, unit="fraction", higher_is_better=True,
                extra={"chance": 0.1, "floor": 0.5, "floor_strategy": "copy the last token",
                       "wilson95": [value - 0.05, min(1.0, value + 0.05)], **extra})


@pytest.fixture
def board(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU", "logical_cpus": 2})
    db.store(engine, [
        _acc("transformer", "mqar", 0.99),
        _acc("mamba", "mqar", 0.5, not_converged=True,
             convergence="validation still improving at the end"),
        _acc("mamba", "copy_length_gen", 0.08, learned_in_range=False, accuracy_in_range=0.15),
        _acc("transformer", "lm_eval", 0.4, metric="acc"),
    ])
    return engine


def test_shading_runs_from_the_floor_not_from_chance() -> None:
    column = {"unit": "fraction", "higher_is_better": True}
    assert render.shade(column, 0.5, floor=0.5) == render.shade(column, 0.0) == "hsl(0, 60%, 85%)"
    assert render.shade(column, 0.75, floor=0.5) == "hsl(60, 60%, 85%)"
    assert render.shade(column, 0.75) == "hsl(90, 60%, 85%)"
    assert render.shade({**column, "ranked": False}, 0.9) is None


def test_capability_page_shows_chance_floor_and_marks(board, tmp_path: Path) -> None:
    render.build(board, tmp_path / "site")
    html = (tmp_path / "site" / "capability.html").read_text()
    assert "chance 0.100" in html and "floor 0.500" in html
    assert "not converged" in html and "validation still improving at the end" in html
    assert "not learned in range" in html and "not a length generalisation result" in html
    assert "Wilson 95% interval over test items [0.940, 1.00]" in html
    # mamba's 0.5 on mqar sits at the floor: shaded red, not the orange of 0.5 from chance
    assert 'title="not converged' in html and "hsl(0, 60%, 85%)" in html


def test_an_unranked_task_says_why_and_is_not_shaded(board, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "task_ranking",
                        lambda task: (False, "32 items") if task == "lm_eval" else (True, ""))
    boards = render.leaderboards(db.results(board), {}, kind=None)
    (col,) = [c for c in boards[0]["columns"] if c["task"] == "lm_eval"]
    assert not col["ranked"] and col["unranked_reason"] == "32 items"
    row = next(r for r in boards[0]["rows"] if r["arch"] == "transformer")
    idx = boards[0]["columns"].index(col)
    assert row["cells"][idx]["shade"] is None
