"""Prefill latency against sequence length per variant, and the fitted scaling exponent.

    python benchmarks/scaling.py [--names a b ...] [--lengths 1024 4096 16384] --out FILE.json

Every (variant, T) is built (seed 0) and run once before any timing; then each round times
every (variant, T) once with `instruments.timing.time_fn`, the order rotated each round, so all
variants are interleaved over the same stretch of machine time rather than one after another.
Prints a markdown table of median milliseconds per call and the log-log slope of median
latency on T (`instruments.stats.loglog_slope`: ~1 linear, ~2 quadratic), and writes every sample
to JSON. Float32 on CPU, B = 1, inference mode, torch threads fixed (2 by default). Needs the
project installed (`make` installs it editable).

Why this is not the efficiency suite: a suite measures each (variant, T) in its own isolated
cell process, one after another, which is what a leaderboard row needs (no shared allocator or
thread pool, a timeout and memory cap per cell) and what ``harness.derive`` fits exponents on.
This script is the opposite control: every variant in one process, interleaved round by round,
so slow drifts of a shared machine hit all variants alike and the ratios between them are the
cleanest this machine gives. When the two disagree, the machine, not the code, is the suspect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

import architectures
from tasks.instruments.hardware import fingerprint
from tasks.instruments.stats import loglog_slope, summarize
from tasks.instruments.timing import time_fn

Key = tuple[str, int]  # (variant, T)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--names", nargs="+", default=None, help="variants (default: all registered)")
    p.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    p.add_argument("--rounds", type=int, default=5, help="interleaved passes over every case")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpus", default=None, help="pin the process to these CPUs, e.g. 0,1")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--min-sample-s", type=float, default=0.05)
    p.add_argument("--out", required=True, help="JSON file to write")
    return p.parse_args(argv)


def pin(threads: int, cpus: str | None) -> None:
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    torch.set_num_threads(threads)


def build(name: str, args: argparse.Namespace) -> architectures.LanguageModel:
    config = {"d_model": args.d_model, "n_layers": args.n_layers}
    if "max_seq_len" in architectures.config_keys(name):  # sequence-sized weights fit every T
        config["max_seq_len"] = max(args.lengths)
    torch.manual_seed(0)
    return architectures.build(name, **config).eval()


def tokens(seq_len: int) -> torch.Tensor:
    return torch.randint(0, 256, (1, seq_len), generator=torch.Generator().manual_seed(0))


def warm_up(models: dict[str, Any], lengths: list[int]) -> tuple[list[Key], dict[Key, str]]:
    """Run every (variant, T) once; return those that ran and why the others cannot."""
    ok, skipped = [], {}
    for name, model in models.items():
        for t in lengths:
            try:
                model(tokens(t))
                ok.append((name, t))
            except (ValueError, RuntimeError, MemoryError) as err:
                skipped[(name, t)] = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return ok, skipped


def measure(models: dict[str, Any], cases: list[Key], rounds: int,
            min_sample_s: float) -> dict[Key, list[float]]:
    """Samples in ms per case: one calibrated sample per case per round, order rotated."""
    samples: dict[Key, list[float]] = {case: [] for case in cases}
    for r in range(rounds):
        shift = r % len(cases)
        for name, t in cases[shift:] + cases[:shift]:
            x, model = tokens(t), models[name]
            timing = time_fn(lambda m=model, x=x: m(x), warmup=1, min_sample_s=min_sample_s,
                             n_samples=1, reference=None, contention=None, ci_target=None)
            samples[(name, t)].append(timing.samples_s[0] * 1e3)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def exponent(lengths: list[int], medians: dict[int, float]) -> float | None:
    xs = [t for t in lengths if t in medians]
    return loglog_slope(xs, [medians[t] for t in xs]) if len(xs) >= 2 else None


def table(rows: list[dict[str, Any]], lengths: list[int]) -> str:
    head = "| variant | " + " | ".join(f"T={t} (ms)" for t in lengths) + " | exponent |"
    lines = [head, "|" + "---|" * (len(lengths) + 2)]
    for row in rows:
        cells = [f"{row['median_ms'][t]:.2f}" if t in row["median_ms"] else "skipped"
                 for t in lengths]
        k = row["exponent"]
        lines.append(f"| {row['name']} | " + " | ".join(cells) +
                     f" | {'—' if k is None else f'{k:.2f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    pin(args.threads, args.cpus)
    names = args.names or architectures.names()
    lengths = sorted(args.lengths)
    models = {name: build(name, args) for name in names}
    with torch.inference_mode():
        cases, skipped = warm_up(models, lengths)
        samples = measure(models, cases, args.rounds, args.min_sample_s)
    rows = []
    for name in names:
        medians = {t: summarize(samples[(name, t)]).median for t in lengths if (name, t) in samples}
        rows.append({
            "name": name, "config": models[name].config, "kernel_path": models[name].kernel_path,
            "median_ms": medians, "exponent": exponent(lengths, medians),
            "samples_ms": {t: samples[(name, t)] for t in medians},
            "skipped": {t: why for (n, t), why in skipped.items() if n == name},
        })
    print(table(rows, lengths))
    report = {"lengths": lengths, "rounds": args.rounds, "threads": torch.get_num_threads(),
              "batch_size": 1, "dtype": "float32", "torch": torch.__version__,
              "python": platform.python_version(), "hardware": fingerprint("cpu").stable,
              "method": "timing.time_fn per (variant, T) per round; median over rounds; "
                        "exponent = instruments.stats.loglog_slope(T, median)",
              "results": rows}
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
