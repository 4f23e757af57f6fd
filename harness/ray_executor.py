"""The Ray executor: each cell is a Ray task running the same isolated cell process as locally.

On the worker, the task launches the cell through a warm :class:`~harness.spawner.Spawner` kept
by that Ray worker process (:func:`harness.launch.execute`: own process group, timeout,
address-space cap; the cell server dies with the Ray worker). The driver keeps the claims, the
heartbeat and the storage (:mod:`harness.runner`), so a cell is stored once however many
drivers share the database.

Resources per task kind (:func:`resources`): an accuracy cell asks for its threads (and a
quarter of a GPU on CUDA), so such cells pack; an efficiency cell asks for a whole node's cores
on CPU, or a whole GPU and that GPU's share of the node's cores on CUDA, so no other cell shares
what it measures. A task whose worker or node is lost is retried by Ray (``max_retries``)
while the driver's claim stays held; a driver that dies loses its claims when their lease runs
out, and another driver measures those cells.

Safe by default: ``RAY_USAGE_STATS_ENABLED=0`` in every Ray process archbench starts or
connects; a cluster started here (no ``--address``) has no dashboard and binds 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import os
import socket
import uuid
from concurrent.futures import Future
from functools import lru_cache
from typing import Any

import tasks
from harness.executors import USAGE_STATS_ENV, Executor, ExecutorError
from harness.launch import MEMORY_SHARE, cell_env, execute, machine_memory
from harness.plan import Cell
from harness.provenance import code_version
from harness.spawner import Spawner
from tasks.instruments.hardware import Hardware
from tasks.instruments.hardware import fingerprint as hardware_fingerprint

ACCURACY_GPUS = 0.25  # accuracy cells are small models: four share a GPU
MAX_RETRIES = 3  # a task whose worker process or node died is run again (system failures only)
CONNECT_TIMEOUT_S = 5.0
FORWARD = ("ARCHBENCH_CHECKPOINTS",)  # the driver's settings a cell process needs
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a local node's IP is 127.0.0.1
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _import_ray() -> Any:
    os.environ.update(USAGE_STATS_ENV)
    try:
        import ray  # lazy: an optional extra (archbench[ray])
    except ImportError as err:
        raise ExecutorError(f"--executor ray: Ray is not installed ({err}); install it with "
                            "pip install 'archbench[ray]'") from None
    return ray


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--address: expected auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ExecutorError(f"--address: no Ray cluster reachable at {address} ({err})") from None


def connect(address: str | None) -> Any:
    """Connect to the cluster at ``address`` (``auto``: the one started on this machine), or
    start a private one on 127.0.0.1 with no dashboard when ``address`` is None."""
    if address and address != "auto":
        _reachable(address)
    local = not address or address.rpartition(":")[0] in LOOPBACK
    if local:  # this machine's node: keep Ray on 127.0.0.1 (it would use the routable address)
        os.environ.update(LOCAL_ENV)
    ray = _import_ray()
    env_vars = {**USAGE_STATS_ENV, **(LOCAL_ENV if local else {})}
    options: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": False,
                               "namespace": "archbench", "configure_logging": False}
    if not address:
        options.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(address=address or None, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        text = " ".join(str(err).split())[:300]
        raise ExecutorError(f"--address: cannot connect to a Ray cluster at {address}: "
                            f"{text}") from None
    return ray


def resources(cell: Cell, node_cpus: int, node_gpus: int, memory: int | None) -> dict[str, Any]:
    """Ray task options for this cell (module doc); ``node_*``: the smallest node's."""
    cuda = cell.device.startswith("cuda")
    if tasks.get(cell.task).kind == "accuracy":
        opts: dict[str, Any] = {"num_cpus": cell.threads,
                                "num_gpus": ACCURACY_GPUS if cuda else 0}
    elif cuda:
        opts = {"num_gpus": 1,
                "num_cpus": max(cell.threads, node_cpus // max(1, node_gpus))}
    else:
        opts = {"num_cpus": max(cell.threads, node_cpus), "num_gpus": 0}
    if memory:
        opts["memory"] = memory
    return opts


@lru_cache(maxsize=4)
def _worker_spawner(plugins: tuple[str, ...]) -> Spawner:
    """This Ray worker process's warm cell server, kept for its next tasks."""
    spawner = Spawner(plugins)
    atexit.register(spawner.close)
    return spawner


def run_cell(plugins: tuple[str, ...], spec: dict[str, Any], task_env: dict[str, str],
             threads: int, device: str, timeout_s: float, memory_limit: int | None,
             forward: dict[str, str], expect: tuple[str, str]) -> dict[str, Any]:
    """The Ray task: run one cell on this node, refusing a node that is not the run's machine
    or code (its rows would carry the wrong provenance)."""
    here = (hardware_fingerprint(device).fingerprint, code_version())
    if here != tuple(expect):
        return {"status": "failed", "wall_s": 0.0, "error": f"not run on {socket.gethostname()}:"
                f" its hardware/code {here} differ from the run's {tuple(expect)}; a run needs "
                "identical nodes with the same archbench"}
    cap = memory_limit
    if cap is None and not device.startswith("cuda"):
        total, cpus = machine_memory(), os.cpu_count() or 1
        cap = int(total * MEMORY_SHARE * min(1.0, threads / cpus)) if total else None
    return execute(_worker_spawner(tuple(plugins)), spec, cell_env(task_env, threads, forward),
                   timeout_s, cap, task_env, device)


def _probe(device: str) -> tuple[str, str, dict[str, Any]]:
    hw = hardware_fingerprint(device)
    return hw.fingerprint, code_version(), hw.stable


class RayExecutor(Executor):
    """Cells as Ray tasks on the cluster at ``address`` (module doc)."""

    name = "ray"

    def __init__(self, plugins: tuple[str, ...] = (), *, address: str | None = None,
                 memory_limit: int | None = None) -> None:
        self.plugins, self.address, self.memory_limit = plugins, address, memory_limit
        self.ray = connect(address)
        self.remote = self.ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_cell)
        self.refs: list[Any] = []
        self.expect: tuple[str, str] = ("", "")
        self.node_cpus = self.node_gpus = 0

    def _nodes(self, gpu: bool) -> list[dict[str, Any]]:
        alive = [n for n in self.ray.nodes() if n.get("Alive")]
        return [n for n in alive if n["Resources"].get("GPU", 0) >= 1 or not gpu]

    def check(self, cells: list[Cell]) -> None:
        cuda = any(c.device.startswith("cuda") for c in cells)
        nodes = self._nodes(cuda)
        where = self.address or "127.0.0.1 (started here)"
        if cuda and not nodes:
            raise ExecutorError(f"--device cuda: the Ray cluster at {where} has no GPU (its "
                                f"resources: {self._summary()}); use GPU nodes or --device cpu")
        if not nodes:
            raise ExecutorError(f"--executor ray: the Ray cluster at {where} has no live node")
        self.node_cpus = int(min(n["Resources"].get("CPU", 0) for n in nodes))
        self.node_gpus = int(min(n["Resources"].get("GPU", 0) for n in nodes))
        threads = max((c.threads for c in cells), default=1)
        if threads > self.node_cpus:
            raise ExecutorError(f"--threads: cells ask for {threads} cores but the smallest "
                                f"node of the Ray cluster at {where} has {self.node_cpus}")

    def _summary(self) -> str:
        res = self.ray.cluster_resources()
        return ", ".join(f"{k} {res[k]:g}" for k in ("CPU", "GPU") if k in res) or "none"

    def hardware(self, device: str) -> Hardware:
        """The machine type of the cluster's nodes, asked of a node (the driver may be a login
        host with neither the GPU nor the cores)."""
        gpus = 0.001 if device.startswith("cuda") else 0  # so the probe lands on a GPU node
        ref = self.ray.remote(num_cpus=0, num_gpus=gpus, max_retries=MAX_RETRIES)(_probe)
        fp, version, stable = self.ray.get(ref.remote(device))
        self.expect = (fp, version)
        if version != code_version():
            raise ExecutorError(f"--executor ray: the cluster runs archbench {version}, this "
                                f"driver {code_version()}; install the same code on every node")
        return Hardware(fingerprint=fp, stable=stable, volatile={})

    def begin(self) -> str:
        self.refs = []
        return uuid.uuid4().hex[:16]

    def groups(self, cells: list[Cell]) -> list[tuple[list[Cell], int]]:
        """Every cell at once, as many in flight as the cluster has cores (Ray places them by
        their resources); a cell is claimed only when it is submitted."""
        res = self.ray.cluster_resources()
        return [(cells, max(1, int(res.get("CPU", 1))))] if cells else []

    def submit(self, cell: Cell, spec: dict[str, Any], timeout_s: float) -> Future:
        task_env = tasks.get(cell.task).env
        opts = resources(cell, self.node_cpus, self.node_gpus, self.memory_limit)
        forward = {k: os.environ[k] for k in FORWARD if k in os.environ}
        ref = self.remote.options(**opts).remote(
            self.plugins, spec, task_env, cell.threads, cell.device, timeout_s,
            self.memory_limit, forward, self.expect)
        self.refs.append(ref)
        out: Future = Future()

        def settle(done: Future) -> None:
            try:
                out.set_result(done.result())
            except Exception as err:  # noqa: BLE001 - retries spent: this cell's failure
                text = " ".join(f"{type(err).__name__}: {err}".split())[:2000]
                out.set_result({"status": "failed", "wall_s": 0.0,
                                "error": f"the Ray task failed after {MAX_RETRIES} retries: "
                                f"{text}"})

        ref.future().add_done_callback(settle)
        return out

    def end(self) -> None:
        for ref in self.refs:  # an interrupted run: its cells stop with it
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or already gone
                continue
        self.refs = []

    def close(self) -> None:
        self.end()
        self.ray.shutdown()
