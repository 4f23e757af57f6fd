"""Worker entry point: run one cell in this (isolated) process and write its outcome as JSON.

``python -m harness.cell SPEC.json OUT.json``. The parent (:mod:`harness.runner`) owns timeouts,
storage and the terminal; this process only measures.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

CHECKPOINT_ENV = "ARCHBENCH_CHECKPOINTS"
DEFAULT_CHECKPOINTS = "results/checkpoints"


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the runner dies, so a killed run leaves no orphan measuring."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def classify(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".lower()
    if isinstance(err, MemoryError) or "out of memory" in text or "can't allocate" in text:
        return "oom"
    return "failed"


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from harness import plugins
    from harness.context import CellContext

    torch.set_num_threads(spec["threads"])
    plugins.load_entry_points()  # as the CLI did in the parent process
    for path in spec.get("plugins", []):
        plugins.load(path)
    import tasks

    task = tasks.get(spec["task"])
    ctx = CellContext(arch=spec["arch"], arch_config=spec["arch_config"], seed=spec["seed"],
                      device=spec["device"], dtype=spec["dtype"], threads=spec["threads"],
                      cell_id=spec.get("cell_id"),
                      checkpoint_dir=os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINTS)
    from harness.configs import build_config

    cfg = build_config(task.config_cls, spec["task_config"], task.name)
    metrics = task.run(cfg, ctx)
    return {"status": "ok", "metrics": [m.to_dict() for m in metrics],
            "threads_used": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    spec_path, out_path = (argv or sys.argv[1:])[:2]
    with open(spec_path) as f:
        spec = json.load(f)
    start = time.perf_counter()
    try:
        outcome = run_spec(spec)
    except Exception as err:  # a crash in a cell becomes a row, never a lost run
        outcome = {"status": classify(err), "error": traceback.format_exc(limit=20)}
    outcome["wall_s"] = time.perf_counter() - start
    with open(out_path, "w") as f:
        json.dump(outcome, f, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
