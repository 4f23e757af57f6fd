"""The Python API (harness.api, re-exported by the harness package): what the CLI calls."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness import api, suite
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_exports_the_api_without_importing_the_runner() -> None:
    code = ("import sys, harness; assert 'harness.runner' not in sys.modules; "
            "f = harness.run_suite; assert f.__module__ == 'harness.api'; "
            "assert set(harness.API) == set(__import__('harness.api').api.__all__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        harness.nope  # noqa: B018


def test_plan_suite_creates_no_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    planned = harness.plan_suite("quick", db_url=url)
    assert len(planned.cells) == 36 and planned.todo == planned.cells
    assert planned.eta_s > 0 and planned.known == 0
    assert not (tmp_path / "none.db").exists()


def test_bad_input_raises_the_one_line_errors_the_cli_reports(tmp_path: Path) -> None:
    with pytest.raises(suite.SuiteError):
        harness.plan_suite(str(tmp_path / "missing.yaml"), db_url=f"sqlite:///{tmp_path}/x.db")


@pytest.mark.slow
def test_run_suite_then_site_export_and_claims(tmp_path: Path) -> None:
    path = write_suite(tmp_path / "api.yaml", ["transformer", "lstm"],
                       {"peak_memory": {"seq_len": 16}})
    url = f"sqlite:///{tmp_path / 'api.db'}"
    started: list[str] = []
    summary = harness.run_suite(str(path), db_url=url, on_start=lambda c: started.append(c.arch))
    assert isinstance(summary, api.RunSummary)
    assert summary.report.statuses == {"ok": 2} and sorted(started) == ["lstm", "transformer"]
    again = harness.run_suite(str(path), db_url=url)  # resumes: nothing left to measure
    assert again.report.skipped == 2 and again.report.outcomes == []
    index = harness.build_site(tmp_path / "site", db_url=url)
    assert index.name == "index.html" and "peak_memory" in index.read_text()
    n = harness.export_results(tmp_path / "out.csv", "csv", db_url=url)
    with (tmp_path / "out.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert n == len(rows) > 0
    assert {r["kernel_path"] for r in rows if r["arch"] == "lstm"} == {"aten_lstm"}
    assert all(v.status == "not run" for v in harness.check_claims(db_url=url))
