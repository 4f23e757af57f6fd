"""What a cell costs beyond its measurement, and how fast the CLI starts.

Run on a quiet machine: ``python benchmarks/cell_overhead.py [--root CHECKOUT] [--repeats 5]``.
``--root`` points at another checkout of archbench (e.g. a ``git worktree`` of an older commit)
to measure it the same way: every command runs as ``python -m harness.cli`` with that folder as
the working directory, so its own ``harness`` is imported.

It reports, as medians over ``--repeats`` (with min-max):

- ``list suites``: wall time of ``archbench list suites`` (interpreter start included);
- one-cell suite: wall time of ``archbench run`` on a fresh database with one cell of
  ``--task`` (transformer, d_model 32, 1 layer; ``prefill_latency`` at T 16, or
  ``peak_memory`` at T 64, whose malloc settings need a cell server of their own), minus the
  cell's measurement, timed in this process as the median of ``task.run`` after a warm-up:
  the fixed cost a user pays per run;
- per cell in a 10-cell suite: (wall time - 10 x measurement) / 10, start-up shared out;
- marginal per cell: (10-cell wall - one-cell wall - the 9 extra measurements) / 9: what each
  further cell costs once a run is going.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["transformer", "mamba", "linear_attention", "retnet", "gla", "rwkv", "lstm", "s4d",
         "mlstm", "mamba2"]
TASKS = {  # a task whose cells need a server of their own (malloc settings), and one that does not
    "peak_memory": {"seq_len": 64},
    "prefill_latency": {"seq_len": 16, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001,
                        "max_total_s": 1.0, "ci_target": 0, "max_attempts": 1},
}


def suite(path: Path, archs: list[str], task: str) -> Path:
    body = {"name": path.stem, "hardware": {"device": "cpu", "dtype": "float32", "threads": 1},
            "seeds": [0], "timeout_s": 120, "model": {"d_model": 32, "n_layers": 1},
            "architectures": {a: {} for a in archs}, "tasks": {task: TASKS[task]}}
    path.write_text(yaml.safe_dump(body))
    return path


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-1500:]}")
    return took


def measurement_s(archs: list[str], name: str) -> dict[str, float]:
    """Median seconds of the task's own ``run`` per architecture, in this warm process."""
    import tasks
    from architectures.configs import build_config
    from tasks.instruments.context import CellContext

    task = tasks.get(name)
    cfg = build_config(task.config_cls, tasks.resolve_config(name, **TASKS[name]), name)
    out = {}
    for arch in archs:
        ctx = CellContext(arch=arch, arch_config={"d_model": 32, "n_layers": 1}, seed=0,
                          device="cpu", dtype="float32", threads=1)
        task.run(cfg, ctx)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            task.run(cfg, ctx)
            times.append(time.perf_counter() - t)
        out[arch] = statistics.median(times)
    return out


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--task", choices=sorted(TASKS), default="prefill_latency")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "harness.cli"]
    measure = measurement_s(ARCHS, args.task)
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        one = suite(Path(tmp, "one.yaml"), ARCHS[:1], args.task)
        ten = suite(Path(tmp, "ten.yaml"), ARCHS, args.task)
        lists, singles, per_cell, marginal = [], [], [], []
        for i in range(args.repeats):
            lists.append(wall([*cli, "list", "suites"], args.root))
            db1, db10 = Path(tmp, f"one{i}.db"), Path(tmp, f"ten{i}.db")
            single = wall([*cli, "--db", str(db1), "run", "--suite", str(one), "--no-progress"],
                          args.root)
            singles.append(single - measure[ARCHS[0]])
            total = wall([*cli, "--db", str(db10), "run", "--suite", str(ten), "--no-progress"],
                         args.root)
            per_cell.append((total - sum(measure.values())) / len(ARCHS))
            extra = sum(measure.values()) - measure[ARCHS[0]]
            marginal.append((total - single - extra) / (len(ARCHS) - 1))
    print(f"code: {args.root}")
    print(f"measurement ({args.task} {TASKS[args.task]}, in-process median): "
          f"{statistics.median(measure.values()) * 1e3:.1f} ms per cell")
    print(f"archbench list suites:              {summary(lists)}")
    print(f"one-cell run minus its measurement: {summary(singles)}")
    print(f"fixed cost per cell (10-cell run):  {summary(per_cell)}")
    print(f"marginal cost per further cell:     {summary(marginal)}")


if __name__ == "__main__":
    main()
