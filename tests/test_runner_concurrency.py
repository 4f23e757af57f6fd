"""Claims, not guesses: runners sharing a database measure each cell exactly once, on SQLite
and on a real PostgreSQL, and a runner SIGKILLed at random loses nothing on resume."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from harness import db
from harness.spawner import SCRATCH_PREFIX
from tests.conftest import require, write_suite

ARCHS = ["transformer", "linear_attention", "mamba", "retnet", "gla", "rwkv"]
TASKS = {"peak_memory": {"seq_len": 16},
         "prefill_latency": {"seq_len": 16, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001,
                             "max_total_s": 0.5}}
N_CELLS = len(ARCHS) * len(TASKS)


def _suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path / "shared.yaml", ARCHS, TASKS,
                       model={"d_model": 16, "n_layers": 1})


def _cmd(url: str, suite: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "--db", url, "run", "--suite", str(suite),
            "--no-progress"]


def _measured(url: str) -> Counter:
    """(cell, metric) -> how many finished rows were stored for it."""
    engine = db.connect(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT cell_id, metric FROM results WHERE status IN "
                                 "('ok', 'unavailable', 'unsupported')")).all()
    return Counter((c, m) for c, m in rows)


def _run_statuses(url: str) -> Counter:
    with db.connect(url).connect() as conn:
        return Counter(s for (s,) in conn.execute(text("SELECT status FROM runs")))


def _pg_url() -> str:
    url = os.environ.get("ARCHBENCH_TEST_PG_URL")
    if not url:
        require("ARCHBENCH_REQUIRE_PG", "ARCHBENCH_TEST_PG_URL is not set (no PostgreSQL server)")
    engine = db.connect(url)
    db.Base.metadata.drop_all(engine)  # a fresh database: the schema race is part of the test
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS schema_migrations"))
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return _pg_url()


def test_four_runners_measure_every_cell_exactly_once(tmp_path: Path, fresh_url: str) -> None:
    suite = _suite(tmp_path)
    procs = [subprocess.Popen(_cmd(fresh_url, suite), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0, 0], [o[1].decode(errors="replace")[-2000:] for o in outs]
    measured = _measured(fresh_url)
    cells = {c for c, _ in measured}
    assert len(cells) == N_CELLS
    assert set(measured.values()) == {1}, [k for k, v in measured.items() if v > 1]
    assert _run_statuses(fresh_url) == Counter(finished=4)


def _scratch() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*")}


def test_random_sigkills_then_resume_lose_nothing_and_measure_nothing_twice(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    suite = _suite(tmp_path)
    before = _scratch()
    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen(_cmd(url, suite), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait()
    done = subprocess.run(_cmd(url, suite), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = _measured(url)
    assert len({c for c, _ in measured}) == N_CELLS  # nothing lost
    assert set(measured.values()) == {1}  # nothing measured twice
    statuses = _run_statuses(url)
    assert statuses["running"] == 0, statuses  # the killed runs were closed as abandoned
    assert statuses["finished"] >= 1
    time.sleep(0.5)
    assert _scratch() <= before  # no scratch folder left behind
