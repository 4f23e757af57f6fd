"""The Ray executor on a real two-node cluster on 127.0.0.1: a worker node killed mid-run loses
nothing, every cell is stored exactly once, the results equal the local executor's, every Ray
port listens on 127.0.0.1 only and no Ray process reports usage; and the bad inputs (no Ray,
an unreachable address, a GPU the cluster lacks) are one line and exit 2, nothing stored."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from harness import db
from tests.conftest import require, write_suite

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
TASKS = {"peak_memory": {"seq_len": 16},
         "prefill_latency": {"seq_len": 16, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001,
                             "max_total_s": 0.5, "max_attempts": 1},
         "parity": {"steps": 30}}
ARCHS = ["transformer", "retnet"]
N_CELLS = len(ARCHS) * len(TASKS)
# the test's own cluster notices a dead node in seconds, not the default half minute
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0"}


def _have_ray() -> None:
    if importlib.util.find_spec("ray") is None or not RAY.exists():
        require("ARCHBENCH_REQUIRE_RAY", "ray is not installed (pip install 'archbench[ray]')")


def _env(**extra: str) -> dict[str, str]:
    # loopback nodes keep 127.0.0.1 (Ray otherwise swaps it for the routable address); the
    # nodes' token authentication applies to the driver and `ray status` too
    return {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "PYTHONPATH": str(ROOT), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "--db", url, "run", *args, "--no-progress"]


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")

def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None

def _listening(pids: set[int]) -> list[str]:
    """'ADDRESS:PORT' of every TCP socket these processes listen on (``ss -ltnp``)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found

def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)

def _measured(url: str) -> Counter:
    with db.connect(url).connect() as conn:
        rows = conn.execute(text("SELECT cell_id, metric FROM results WHERE status IN "
                                 "('ok', 'unavailable', 'unsupported')")).all()
    return Counter(rows)

def _accuracy(url: str) -> dict[tuple[str, str], float]:
    with db.connect(url).connect() as conn:
        rows = conn.execute(text("SELECT cell_id, metric, value FROM results WHERE task = "
                                 "'parity'")).all()
    return {(c, m): v for c, m, v in rows}

# A head and a worker node on 127.0.0.1, each its own raylet process, started by Ray's own
# cluster launcher in a process of their own. Not `ray start`: Ray 2.60 binds a node pinned to
# 127.0.0.1 to loopback only when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and then its `ray start`
# refuses to add a second node ("Multi-node Ray clusters are not supported"); with the variable
# unset it swaps 127.0.0.1 for the routable address and binds its ports to every interface.
CLUSTER = """
import json, os, sys, time
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, connect=False,
                  head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
raylet = lambda node: node.all_processes["raylet"][0].process.pid
print(json.dumps({"address": cluster.gcs_address, "worker": raylet(worker),
                  "head": raylet(cluster.head_node)}), flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


@pytest.fixture
def cluster() -> Iterator[dict]:
    """A head and a worker node (one core each, their own raylets) on 127.0.0.1."""
    _have_ray()
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], env=_env(**FAST_HEALTH),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line, "the cluster did not start"
        yield {**json.loads(line), "launcher": proc.pid}
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _ancestors(pid: int) -> Iterator[int]:
    while (pid := _ppid(pid) or 0) > 1:
        yield pid


def _cell_running_under(raylet: int) -> bool:
    """A cell process (a child of a cell server) runs in a Ray worker of this raylet."""
    pids = _pids()
    servers = [p for p in pids if "harness.zygote" in _cmdline(p)]
    return any(_ppid(c) == s and raylet in _ancestors(s) for s in servers for c in pids)


def _ray_pids(launcher: int) -> set[int]:
    """Every process of the cluster: the launcher's descendants."""
    return {p for p in _pids() if p == launcher or launcher in _ancestors(p)}


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_results_match_local(tmp_path: Path,
                                                               cluster: dict) -> None:
    seed = int(time.time()) % 100000  # fresh cells in a shared PostgreSQL database
    suite = write_suite(tmp_path / "raysuite.yaml", ARCHS, TASKS, seeds=[seed],
                        model={"d_model": 16, "n_layers": 1})
    url = os.environ.get("ARCHBENCH_TEST_PG_URL") or f"sqlite:///{tmp_path / 'ray.db'}"
    started = time.monotonic()
    run = subprocess.Popen(_cli(url, "--suite", str(suite), "--executor", "ray", "--address",
                                cluster["address"]), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    while not _cell_running_under(cluster["worker"]):
        assert run.poll() is None, run.stdout.read().decode(errors="replace")[-3000:]
        assert time.monotonic() - started < 240, "no cell ever ran on the worker node"
        time.sleep(0.2)
    pids = _ray_pids(cluster["launcher"])
    # this cluster's cell servers only (the machine may hold other tests' servers)
    zygotes = {p for p in pids if "harness.zygote" in _cmdline(p)}
    workers = {_ppid(p) for p in zygotes} - zygotes - {None}
    envs = {p: _environ(p) for p in zygotes | workers}  # read now: a cell server may end
    envs_of_dashboard = {p: _environ(p).get("RAY_USAGE_STATS_ENABLED") == "0" for p in pids
                         if "dashboard/dashboard.py" in _cmdline(p)}
    driver_env = _environ(run.pid)
    listening = _listening(pids | zygotes)
    os.kill(cluster["worker"], signal.SIGKILL)  # the worker node's raylet, mid-cell
    out = run.communicate(timeout=300)[0].decode(errors="replace")
    assert run.returncode == 0, out[-3000:]
    assert listening and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]")
                             for a in listening), listening
    # usage statistics: the variable is set in the driver, in every Ray worker that ran a
    # cell (a cell server's parent), in the cell servers, and in the cluster's dashboard head,
    # the one Ray part that reports usage (it reads the variable before it sends anything)
    seen = [e for e in envs.values() if e]  # those still alive when read
    assert seen and driver_env.get("RAY_USAGE_STATS_ENABLED") == "0"
    assert [e.get("RAY_USAGE_STATS_ENABLED") for e in seen] == ["0"] * len(seen)
    assert all(envs_of_dashboard.values()), envs_of_dashboard
    measured = _measured(url)
    cells = _ours(url, seed)
    assert len(cells) == N_CELLS, out[-3000:]
    assert all(measured[k] == 1 for k in measured if k[0] in cells), measured
    local = f"sqlite:///{tmp_path / 'local.db'}"
    done = subprocess.run(_cli(local, "--suite", str(suite)), env=_env(), capture_output=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    ray_acc = {k: v for k, v in _accuracy(url).items() if k[0] in cells}
    assert ray_acc and ray_acc == _accuracy(local)
    print(f"ray run + local run: {time.monotonic() - started:.0f} s")

def _ours(url: str, seed: int) -> set[str]:
    with db.connect(url).connect() as conn:
        rows = conn.execute(text("SELECT DISTINCT cell_id FROM results WHERE seed = :s AND "
                                 "status = 'ok'"), {"s": seed}).all()
    return {c for (c,) in rows}

def _bad(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    suite = write_suite(tmp_path / "bad.yaml", ["transformer"], {"peak_memory": {"seq_len": 16}})
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    done = subprocess.run(_cli(url, "--suite", str(suite), *args), env=env or _env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archbench: error: "), done.stderr
    if (tmp_path / "bad.db").exists():
        assert not _measured(url), "a bad input stored a measurement"
    return lines[0], url

def test_an_unreachable_address_is_one_line(tmp_path: Path) -> None:
    line, _ = _bad(tmp_path, "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}")
    assert "no Ray cluster reachable at 127.0.0.1:" in line

def test_no_ray_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (simulated)')\n")
    env = _env(PYTHONPATH=f"{fake.parent}{os.pathsep}{ROOT}")
    line, _ = _bad(tmp_path, "--executor", "ray", env=env)
    assert "Ray is not installed" in line and "archbench[ray]" in line

def test_address_without_ray_executor_is_one_line(tmp_path: Path) -> None:
    line, _ = _bad(tmp_path, "--address", "auto")
    assert "--address: only with --executor ray" in line

@pytest.mark.slow
def test_a_gpu_the_cluster_lacks_is_one_line(tmp_path: Path) -> None:
    _have_ray()
    line, _ = _bad(tmp_path, "--executor", "ray", "--device", "cuda")
    assert "has no GPU" in line


def _descendants(pid: int) -> set[int]:
    return {p for p in _pids() if pid in _ancestors(p)}


@pytest.mark.slow
def test_a_private_cluster_listens_on_loopback_only(tmp_path: Path) -> None:
    """``--executor ray`` without ``--address`` starts its own cluster: every port any of its
    processes opens, seen with ``ss`` while the run goes on, is on 127.0.0.1; the dashboard
    head Ray still starts (it also serves jobs and reports usage) has usage reports off."""
    _have_ray()
    suite = write_suite(tmp_path / "private.yaml", ["transformer"],
                        {"peak_memory": {"seq_len": 16}})
    url = f"sqlite:///{tmp_path / 'private.db'}"
    env = {k: v for k, v in _env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    run = subprocess.Popen(_cli(url, "--suite", str(suite), "--executor", "ray"), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: set[str] = set()
    dashboards: set[int] = set()
    while run.poll() is None:
        family = _descendants(run.pid) | {run.pid}
        seen.update(_listening(family))
        dashboards |= {p for p in family if "dashboard/dashboard.py" in _cmdline(p)
                       and _environ(p).get("RAY_USAGE_STATS_ENABLED") != "0"}
        time.sleep(0.2)
    out = run.stdout.read().decode(errors="replace")
    assert run.returncode == 0, out[-3000:]
    assert len(seen) >= 3, seen  # the GCS, the raylet and the object manager at least
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in seen), seen
    assert not dashboards, "a dashboard head without RAY_USAGE_STATS_ENABLED=0"
    assert _measured(url)  # the cell was stored
