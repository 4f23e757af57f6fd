"""Where cells run: the runner hands each claimed cell to an executor and stores what comes back.

The runner (:mod:`harness.runner`) owns claims, leases, the heartbeat and storage; an executor
only launches cells and returns their outcomes as futures. Both executors launch the same
isolated cell process (:func:`harness.launch.execute`: own process group, timeout,
address-space cap):

- ``local`` (the default): a warm cell server on this machine; ``jobs`` accuracy cells at once,
  then every efficiency cell alone.
- ``ray`` (``archbench[ray]``): each cell is a Ray task on a cluster, with resources declared
  per task kind (:mod:`harness.ray_executor`).

The interface, in the order the runner calls it: :meth:`Executor.check` (bad input before any
work), :meth:`Executor.hardware` (the machine the cells run on, whose fingerprint their rows
and claims carry), :meth:`Executor.begin` (a run id), :meth:`Executor.groups` (which cells run
together and how many at once), :meth:`Executor.submit` (one cell, a future of its outcome),
:meth:`Executor.end` (the run is over). :meth:`Executor.close` releases the executor itself.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import tasks
from harness.launch import cell_env, execute, memory_cap
from harness.plan import Cell
from harness.spawner import Spawner
from tasks.instruments.hardware import Hardware
from tasks.instruments.hardware import fingerprint as hardware_fingerprint

EXECUTORS = ("local", "ray")
USAGE_STATS_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # no usage reports from any Ray process


class ExecutorError(ValueError):
    """The executor cannot run these cells (no Ray, no cluster, no GPU...); one line, exit 2."""


class Executor:
    """What the runner needs from a place that runs cells (module doc)."""

    name = "base"

    def check(self, cells: list[Cell]) -> None:
        """Raise :class:`ExecutorError` when these cells cannot run here."""

    def hardware(self, device: str) -> Hardware:
        return hardware_fingerprint(device)

    def begin(self) -> str:
        raise NotImplementedError

    def groups(self, cells: list[Cell]) -> list[tuple[list[Cell], int]]:
        """Consecutive groups of cells and how many of each may run at once."""
        raise NotImplementedError

    def submit(self, cell: Cell, spec: dict[str, Any], timeout_s: float) -> Future:
        raise NotImplementedError

    def end(self) -> None:
        """The run is over (finished or interrupted): stop what still runs for it."""

    def close(self) -> None:
        """Release the executor (a Ray connection); :meth:`end` is called first."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """Cells in children of a warm server on this machine (:mod:`harness.spawner`)."""

    name = "local"

    def __init__(self, plugins: tuple[str, ...] = (), *, jobs: int = 1,
                 memory_limit: int | None = None, spawner: Spawner | None = None) -> None:
        if jobs < 1:
            raise ValueError("jobs must be >= 1")
        self.plugins, self.jobs, self.memory_limit = plugins, jobs, memory_limit
        self.spawner = spawner
        self.pool: ThreadPoolExecutor | None = None

    def begin(self) -> str:
        self.spawner = self.spawner or Spawner(self.plugins)
        self.pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="archbench-cell")
        return self.spawner.run_id

    def warm(self, cells: list[Cell]) -> None:
        if cells and self.spawner is not None:  # no-op if already started
            self.spawner.warm(tasks.get(cells[0].task).env)

    def groups(self, cells: list[Cell]) -> list[tuple[list[Cell], int]]:
        """``jobs`` accuracy cells at once (their results count steps, not seconds); efficiency
        cells one at a time, after them, so no measurement shares the machine with a cell of
        this run."""
        self.warm(cells)
        together = [c for c in cells if self.jobs > 1 and tasks.get(c.task).kind == "accuracy"]
        alone = [c for c in cells if c not in together]
        return [(group, width) for group, width in ((together, self.jobs), (alone, 1)) if group]

    def submit(self, cell: Cell, spec: dict[str, Any], timeout_s: float) -> Future:
        assert self.pool is not None and self.spawner is not None, "begin() first"
        task_env = tasks.get(cell.task).env
        cap = memory_cap(self.memory_limit, cell.device, self.jobs)
        return self.pool.submit(execute, self.spawner, spec, cell_env(task_env, cell.threads),
                                timeout_s, cap, task_env, cell.device)

    def end(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.spawner is not None:
            self.spawner.close()  # its servers kill every running cell's process group
        self.pool = self.spawner = None


def add_flags(sp: Any) -> None:
    """``--executor`` and ``--address`` on an argparse parser (``run``, ``nightly``)."""
    sp.add_argument("--executor", choices=EXECUTORS, default="local", help="local (default) "
                    "or ray: each cell a Ray task on a cluster (docs/runner.md)")
    sp.add_argument("--address", metavar="auto|HOST:PORT", help="--executor ray's cluster "
                    "(auto: the one on this machine; default: a private one on 127.0.0.1)")
