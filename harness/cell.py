"""Worker entry point: run one cell in this (isolated) process and write its outcome as JSON.

``python -m harness.cell SPEC.json OUT.json``. The parent (:mod:`harness.runner`) owns timeouts,
storage and the terminal; this process only measures.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import tasks
from architectures.configs import build_config
from harness import plugins
from harness.values import _native
from tasks.instruments import peak, timing
from tasks.instruments.context import CellContext

CHECKPOINT_ENV = "ARCHBENCH_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "results/checkpoints"


def classify(err: BaseException) -> str:
    """The status a cell's exception stands for: one it declares (``err.status``, e.g. a
    diverged training run), ``oom`` for a failed allocation, else ``failed``."""
    declared = getattr(err, "status", None)
    if isinstance(declared, str) and declared:
        return declared
    text = f"{type(err).__name__}: {err}".lower()
    if isinstance(err, MemoryError) or "out of memory" in text or "can't allocate" in text:
        return "oom"
    return "failed"


def _plain(value: Any) -> Any:
    """JSON-safe form of what a task returned: numpy and torch values become numbers and
    lists (:func:`harness.values._native`), non-finite floats stay floats (the runner stores
    them as nulls with a reason), anything else its ``repr``."""
    value = _native(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def write_outcome(path: str, outcome: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over ``path``): the runner never reads a
    half-written outcome."""
    text = json.dumps(_plain(outcome))
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    plugins.load_entry_points()  # as the CLI did in the parent process
    for path in spec.get("plugins", []):
        plugins.load(path)

    task = tasks.get(spec["task"])
    ctx = CellContext(arch=spec["arch"], arch_config=spec["arch_config"], seed=spec["seed"],
                      device=spec["device"], dtype=spec["dtype"], threads=spec["threads"],
                      cell_id=spec.get("cell_id"),
                      checkpoint_dir=os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINTS)

    cfg = build_config(task.config_cls, spec["task_config"], task.name)
    metrics = task.run(cfg, ctx)
    kernel_path = ctx.kernel_path  # the context saw the model built (on meta if in a child)
    outcome = {"status": "ok",
               "metrics": [{**m.to_dict(), "extra": {**m.extra, "kernel_path": kernel_path}}
                           for m in metrics],
               "threads_used": torch.get_num_threads()}
    if spec.get("measure_peak"):  # the matmul peak this setting lacks, in this same process

        outcome["peak"] = peak.measure(spec["device"], spec["dtype"], spec["threads"])
    return outcome


def main(argv: list[str] | None = None) -> int:
    timing.allow_fork()  # a fresh cell process: nothing has run yet (timed tasks fork)
    spec_path, out_path = (argv or sys.argv[1:])[:2]
    with open(spec_path) as f:
        spec = json.load(f)
    start = time.perf_counter()
    try:
        outcome = run_spec(spec)
    except Exception as err:  # a crash in a cell becomes a row, never a lost run
        outcome = {"status": classify(err), "error": traceback.format_exc(limit=20)}
    outcome["measure_s"] = time.perf_counter() - start  # this process's work, start-up excluded
    write_outcome(out_path, outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
