"""Repeat one latency cell N times, each in its own process, and report the spread of medians.

Run: ``python benchmarks/repeatability.py [--arch transformer] [--task prefill_latency]
[--seq-len 1024] [--repeats 5]``. Spread = (max - min) / median of the per-run medians.
"""

from __future__ import annotations

import argparse
import statistics

import architectures
import tasks
from harness.plan import Cell
from harness.runner import execute


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--task", default="prefill_latency")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    arch_cfg = architectures.resolve_config(args.arch, d_model=64, n_layers=2)
    task_cfg = tasks.resolve_config(args.task, seq_len=args.seq_len)
    cell = Cell(arch=args.arch, arch_version=architectures.get(args.arch).version,
                arch_config=arch_cfg, task=args.task, task_version=tasks.get(args.task).version,
                task_config=task_cfg, seed=0, device="cpu", dtype="float32",
                threads=args.threads)
    medians = []
    for i in range(args.repeats):
        out = execute(cell, timeout_s=300)
        (lat,) = [m for m in out["metrics"] if m["name"] == "latency_ms"]
        medians.append(lat["value"])
        print(f"run {i}: median {lat['value']:.3f} ms, IQR {lat['spread']:.3f} ms, "
              f"n={lat['n_samples']}")
    mid = statistics.median(medians)
    spread = (max(medians) - min(medians)) / mid
    print(f"{args.arch} {args.task} T={args.seq_len}: medians {[round(m, 3) for m in medians]}"
          f" ms; spread (max-min)/median = {spread:.1%}")


if __name__ == "__main__":
    main()
