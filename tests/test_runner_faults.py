"""Every way a cell can misbehave yields that cell's row with a status that is a fact; the
runner never dies, leaves no orphan process, no run row `running` and no scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import db
from harness.cli import main
from harness.spawner import SCRATCH_PREFIX
from tests.conftest import unregister_plugin, write_suite

FAULT_PLUGIN = '''
"""A task that misbehaves on purpose, one way per ``mode``, and a variant whose logits are NaN."""
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import architectures
import tasks
from architectures.transformer import VARIANT as BASE
from tasks.base import Metric, Task


@dataclass(frozen=True)
class Config:
    mode: str = "ok"
    marker: str = ""


def run(cfg, ctx):
    mode = cfg.mode
    if mode == "bad_bytes":
        os.write(2, b"\\xff\\xfe not utf-8 \\x80\\x00 at all\\n")
        raise RuntimeError("after writing bytes that are not UTF-8")
    if mode == "markup":
        raise RuntimeError("closing tag [/red] and [bold]unbalanced")
    if mode == "numpy_extra":
        return [Metric("value", "", 1.0, extra={"array": np.arange(3), "scalar": np.float32(2)})]
    if mode == "nan_extra":
        return [Metric("value", "", 1.0, extra={"curve": [1.0, float("nan"), float("inf")]},
                       samples=[1.0, float("nan")])]
    if mode == "nan_value":
        return [Metric("value", "", float("nan"))]
    if mode == "nul_error":
        raise RuntimeError("a NUL \\x00 inside the error text")
    if mode == "orphan":  # a helper that outlives the cell, holding its output open
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", cfg.marker])
        return [Metric("value", "", 1.0)]
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    if mode == "segv":
        ctypes.string_at(0)
    if mode == "exit":
        sys.exit(3)
    if mode == "alloc":  # far beyond the cap the test sets
        torch.empty(8 * 2**30, dtype=torch.uint8).fill_(1)
    if mode == "loud":
        sys.stdout.write("x" * 5_000_000)
        return [Metric("value", "", 1.0)]
    return [Metric("value", "", 1.0)]


tasks.register(Task(name="fault", kind="efficiency", version=1, config_cls=Config, run=run,
                    headline="value", doc="misbehaves on purpose", needs_causal=False))


@dataclass(frozen=True)
class NanConfig:
    n_heads: int = 2


def make_mixer(cfg, d_model, layer_idx, n_layers):
    mixer = BASE.make_mixer(BASE.config_cls(n_heads=cfg.n_heads), d_model, layer_idx, n_layers)
    forward = mixer.forward
    mixer.forward = lambda x: forward(x) * float("nan")
    return mixer


architectures.register(architectures.Variant(
    name="nan_mixer", family="test double", version=1, papers=(), config_cls=NanConfig,
    make_mixer=make_mixer, doc="NaN activations: its training loss is NaN from step one.",
))
'''


@pytest.fixture(scope="module")
def fault_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One file for the module (the registry is per process, so it is loaded once), taken out
    of the registries afterwards so other tests see only what ships."""
    path = tmp_path_factory.mktemp("plugin") / "fault_plugin.py"
    path.write_text(textwrap.dedent(FAULT_PLUGIN))
    yield path
    unregister_plugin(path, architectures=("nan_mixer",), tasks=("fault",))


def _run(tmp_path: Path, db_url: str, plugin: Path, task_cfgs: dict, *flags: str,
         archs: tuple[str, ...] = ("transformer",)) -> tuple[int, list[dict]]:
    suite = write_suite(tmp_path / "faults.yaml", list(archs), task_cfgs)
    code = main(["--db", db_url, "--plugin", str(plugin), "run", "--suite", str(suite), *flags])
    return code, db.results(db.connect(db_url))


def _scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*")}


FAULTS = [  # mode, status, text in the error
    ("bad_bytes", "failed", "not utf-8"),
    ("markup", "failed", "[/red]"),
    ("nul_error", "failed", "a NUL"),
    ("nan_value", "failed", "non-finite"),
    ("sigkill", "killed", "SIGKILL"),
    ("sigterm", "killed", "SIGTERM"),
    ("segv", "failed", "SIGSEGV"),
    ("exit", "failed", "exited with 1"),
]


@pytest.mark.parametrize(("mode", "status", "text"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_faulty_cell_is_its_own_row_and_the_run_goes_on(
        tmp_path: Path, db_url: str, fault_plugin: Path, mode: str, status: str,
        text: str) -> None:
    before = _scratch_dirs()
    # progress on: the runner prints the error line through rich without interpreting markup
    code, rows = _run(tmp_path, db_url, fault_plugin, {"fault": {"mode": mode},
                                                       "peak_memory": {"seq_len": 16}})
    assert code == 1  # a cell did not finish ok: exit 1 without --allow-failures
    fault = [r for r in rows if r["task"] == "fault"]
    assert [r["status"] for r in fault] == [status], fault
    assert text in fault[0]["error"] and "\x00" not in fault[0]["error"]
    other = [r for r in rows if r["task"] == "peak_memory" and r["status"] == "ok"]
    assert other, "the run went on after the faulty cell"
    engine = db.connect(db_url)
    with engine.connect() as conn:
        from sqlalchemy import text as sql

        statuses = [s for (s,) in conn.execute(sql("SELECT status FROM runs"))]
    assert statuses == ["finished"]
    assert _scratch_dirs() <= before


def test_allow_failures_keeps_exit_zero(tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    code, rows = _run(tmp_path, db_url, fault_plugin, {"fault": {"mode": "markup"}},
                      "--no-progress", "--allow-failures")
    assert code == 0 and rows[0]["status"] == "failed"


def test_non_json_values_are_stored_portably(tmp_path: Path, db_url: str,
                                             fault_plugin: Path) -> None:
    code, rows = _run(tmp_path, db_url, fault_plugin, {"fault": {"mode": "numpy_extra"}},
                      "--no-progress")
    assert code == 0
    (row,) = rows
    assert row["status"] == "ok" and row["extra"]["array"] == [0, 1, 2]
    assert row["extra"]["scalar"] == 2.0


def test_loud_cell_is_fine(tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    code, rows = _run(tmp_path, db_url, fault_plugin, {"fault": {"mode": "loud"}},
                      "--no-progress")
    assert code == 0 and rows[0]["status"] == "ok"


def test_helper_outliving_its_cell_is_killed_and_the_cell_is_ok(
        tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    marker = f"archbench-orphan-{os.getpid()}-{time.monotonic_ns()}"
    code, rows = _run(tmp_path, db_url, fault_plugin,
                      {"fault": {"mode": "orphan", "marker": marker}}, "--no-progress")
    assert code == 0 and rows[0]["status"] == "ok"
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert marker not in ps, "the cell's helper process was left running"


def test_allocation_over_the_cap_is_oom(tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    code, rows = _run(tmp_path, db_url, fault_plugin, {"fault": {"mode": "alloc"}},
                      "--no-progress", "--memory-limit", "1GiB")
    assert code == 1
    (row,) = rows
    assert row["status"] == "oom" and "memory cap of 1.0 GiB" in row["error"], row["error"]


def test_nan_training_loss_is_diverged_not_a_score(tmp_path: Path, db_url: str,
                                                   fault_plugin: Path) -> None:
    task = {"parity": {"n_bits": 8, "steps": 8, "train_size": 64, "test_size": 32,
                       "batch_size": 4, "lr_grid": [1e-3]}}
    code, rows = _run(tmp_path, db_url, fault_plugin, task, "--no-progress",
                      archs=("nan_mixer",))
    assert code == 1
    assert {r["status"] for r in rows} == {"diverged"}, rows
    assert all(r["value"] is None for r in rows)
    assert "diverged" in rows[0]["error"]


def test_sigkill_from_outside_is_killed_and_does_not_stop_the_sweep(
        tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    code, rows = _run(tmp_path, db_url, fault_plugin,
                      {"fault": {"sweep": {"mode": ["sigkill", "ok"]}}}, "--no-progress")
    assert code == 1
    assert sorted(r["status"] for r in rows) == ["killed", "ok"]


@pytest.mark.slow
def test_runner_killed_right_after_spawning_leaves_no_cell_running(
        tmp_path: Path, db_url: str, fault_plugin: Path) -> None:
    """The cell's death-with-parent is set and then the parent checked: no window where a
    runner's death leaves the cell measuring."""
    marker = f"archbench-victim-{os.getpid()}-{time.monotonic_ns()}"
    suite = write_suite(tmp_path / "victim.yaml", ["transformer"],
                        {"fault": {"mode": "orphan", "marker": marker}})
    for delay in (0.0, 0.002, 0.01, 0.05, 0.5):
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "--db", db_url,
                                 "--plugin", str(fault_plugin), "run", "--suite", str(suite),
                                 "--no-progress"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(1.0 + delay)
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        if marker not in ps:
            break
        time.sleep(0.2)
    assert marker not in ps
