"""Planning says what it will do before doing it: duplicate-function warnings, a dry run with
an ETA, and one-line errors for protocol settings that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import plan, suite
from harness.cli import main
from tests.conftest import write_suite


def test_a_window_as_long_as_the_task_is_warned_about(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "w.yaml", ["transformer", "sliding_window"],
                       {"induction_heads": {"seq_len": 32, "steps": 5}})
    lines = plan.warnings(plan.plan(suite.load(str(path))))
    assert len(lines) == 1 and lines[0].startswith("sliding_window x induction_heads: ")
    assert "32" in lines[0] and "transformer" in lines[0]
    short = write_suite(tmp_path / "s.yaml", ["transformer", "sliding_window"],
                        {"induction_heads": {"seq_len": 32, "steps": 5}},
                        architectures={"transformer": {}, "sliding_window": {"window": 8}})
    assert plan.warnings(plan.plan(suite.load(str(short)))) == []


@pytest.mark.slow
def test_dry_run_prints_cells_warnings_and_eta_and_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_suite(tmp_path / "d.yaml", ["transformer", "sliding_window"],
                       {"induction_heads": {"seq_len": 32, "steps": 5}})
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["--db", url, "run", "--suite", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("todo  ") == 2 and "warning: sliding_window x induction_heads" in out
    assert "2 cells, 0 already done, 2 to run; ETA ~" in out
    assert not (tmp_path / "none.db").exists()  # a plan creates nothing
    assert main(["--db", url, "plan", "--suite", str(path), "--jobs", "2"]) == 0
    assert "with --jobs 2" in capsys.readouterr().out


def test_estimate_prefers_history_of_the_same_variant_and_task() -> None:
    cells = plan.plan(suite.load("quick"))
    mqar = [c for c in cells if c.task == "mqar"]
    total, known = plan.estimate(mqar, {(mqar[0].arch, "mqar"): [10.0, 30.0, 20.0]})
    assert known == len(mqar) and total == 20.0 * len(mqar)  # same task's median elsewhere
    assert plan.estimate(mqar, {}) == (plan.DEFAULT_CELL_S["accuracy"] * len(mqar), 0)


@pytest.mark.slow
@pytest.mark.parametrize("tasks_cfg,needle", [
    ({"mqar": {"lr_grid": [0.001, 0]}}, "lr_grid: every learning rate must be a number > 0; got 0"),
    ({"mqar": {"lr_grid": [0.001, -0.01]}}, "got -0.01"),
    ({"parity": {"n_bits": 0}}, "n_bits"),
    ({"induction_heads": {"seq_len": 2}}, "seq_len"),
])
def test_bad_protocol_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        tasks_cfg: dict, needle: str) -> None:
    path = write_suite(tmp_path / "bad.yaml", ["transformer"], tasks_cfg)
    assert main(["--db", f"sqlite:///{tmp_path / 'x.db'}", "run", "--suite", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "bad.yaml" in err
