"""CLI end to end on a tiny suite: list, run, export, site, doctor."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import architectures
import tasks
from harness import db
from harness.cli import main
from tests.conftest import write_suite


def test_list_architectures_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "architectures", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == architectures.names(include_hf=True)
    assert {"transformer", "linear_attention", "mamba", "hybrid"} <= {e["name"] for e in entries}
    for e in entries:
        assert e["family"] and isinstance(e["version"], int) and e["papers"] and e["doc"]


def test_list_tasks_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "tasks", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == tasks.names()
    assert {e["name"] for e in entries} >= {"mqar", "prefill_latency", "decode_latency",
                                            "peak_memory", "energy"}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tiny run with every task kind, shared by the export and site tests."""
    tmp = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{tmp / 'cli.db'}"
    task_cfgs = {
        "prefill_latency": {"seq_len": 16, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001},
        "decode_latency": {"context_len": 8, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001},
        "energy": {"seq_len": 16},
        "mqar": {"seq_len": 6, "n_pairs": 2, "n_keys": 8, "steps": 5, "train_size": 64,
                 "test_size": 16, "batch_size": 8},
    }
    suite_path = write_suite(tmp / "cli.yaml", ["transformer", "mamba"], task_cfgs)
    assert main(["--db", url, "run", "--suite", str(suite_path), "--no-progress"]) == 0
    return url


@pytest.mark.slow
def test_export_csv_one_row_per_result_with_provenance(ran: str, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    assert main(["--db", ran, "export", "--format", "csv", "--out", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == db.count(db.connect(ran))
    for col in ("run_id", "code_version", "cell_id", "config_hash", "arch", "arch_config",
                "task", "task_config", "seed", "metric", "unit", "value", "spread", "n_samples",
                "status", "error", "method", "hardware_fingerprint", "kernel_path", "threads",
                "dtype", "samples"):
        assert col in rows[0], col
    energy = [r for r in rows if r["task"] == "energy"]
    # measured where this machine has a meter, else unavailable with its reason: never 0
    assert energy and all((r["status"] == "ok" and float(r["value"]) > 0) or
                          (r["status"] == "unavailable" and r["value"] == "" and r["error"])
                          for r in energy)
    assert json.loads(rows[0]["arch_config"])["d_model"] == 32


@pytest.mark.slow
def test_site_lists_every_variant_with_value_or_status(ran: str, tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert main(["--db", ran, "site", "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    for arch in ("transformer", "mamba"):
        assert f'arch/{arch}.html' in html
    metered = {r["status"] for r in db.results(db.connect(ran)) if r["task"] == "energy"}
    assert (">unavailable</span>" in html) == ("unavailable" in metered)  # energy, as stored
    assert "not run" not in html
    assert (out / "static" / "style.css").is_file()


@pytest.mark.slow
def test_doctor_reports_meters_and_database(ran: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", ran, "doctor"]) == 0
    out = capsys.readouterr().out
    for section in ("[hardware]", "[devices]", "[threads]", "[meters]", "[database]"):
        assert section in out
    assert "works=True" in out
