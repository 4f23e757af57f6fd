"""Site, exports and the post-run derive step on a large results database.

    python benchmarks/scale_100k.py [--rows 100000] [--db PATH] [--repeat 3] [--only site,...]

Generates (once; cached by path and row count) a SQLite database shaped like what
``harness.runner`` stores: several hardware fingerprints, many runs (one per code version),
22 variants x efficiency tasks (sequence-length sweeps of prefill, decode, memory and FLOP
counts, with 30-100 timing samples per row and summary/extra/volatile JSON) and accuracy tasks
over three seeds (with training facts and baselines in ``extra``), plus some failed and
unavailable rows. Then times, wall clock, median of ``--repeat`` in this one process:
``render.build`` (what ``archbench site`` calls), ``export.export`` as csv, parquet and jsonl
(what ``archbench export`` calls) and ``derive.refresh`` after one new run is stored (what
``archbench run`` calls after its cells). Prints a small table (median, min, max seconds).
Generation time is not part of the figures. Run it with ``OMP_NUM_THREADS=1`` on a quiet
machine. Works with the old ``refresh(engine, code_version)`` too (then full recompute).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks  # noqa: E402
from harness import catalog, db  # noqa: E402

ARCHS = ['block_state', 'gla', 'h3', 'hybrid', 'hyena', 'linear_attention', 'linformer',
         'looped', 'lstm', 'mamba', 'mamba2', 'masformer', 'mlstm', 'mod', 'moe', 'performer',
         'pool_mixer', 'retnet', 'rwkv', 's4d', 'sliding_window', 'transformer']
LENGTHS = [64, 128, 256, 512, 1024, 2048]
# task -> (config maker over a length or None, metrics (name, unit, higher_is_better))
EFFICIENCY = {
    "prefill_latency": ("seq_len", [("latency_ms", "ms", False),
                                    ("latency_vs_ref", "x reference", False),
                                    ("tokens_per_s", "tokens/s", True)]),
    "decode_latency": ("context_len", [("latency_ms", "ms", False),
                                       ("latency_vs_ref", "x reference", False)]),
    "peak_memory": ("seq_len", [("peak_memory_mib", "MiB", False)]),
    "flops": ("seq_len", [("forward_flops_per_token", "FLOP/token", None)]),
}
ACCURACY = ["mqar", "parity", "dyck", "flip_flop", "induction_heads", "listops",
            "selective_copy", "permutation"]
SEEDS = [0, 1, 2]
SHAPE = "v3"  # the generator's version: a cached database of another shape is made again
FINGERPRINTS = ["fp_cpu_a", "fp_cpu_b", "fp_gpu_c"]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _timed_extra(rng: random.Random, median: float) -> dict[str, Any]:
    extra: dict[str, Any] = {"noisy": rng.random() < 0.08, "ci_met": rng.random() > 0.1,
                             "ci_target": 0.05, "kernel_path": rng.choice(["eager", "sdpa",
                                                                           "scan"]),
                             "ref_ms": round(rng.uniform(0.5, 2.0), 4)}
    extra["ref_ratio"] = round(median / extra["ref_ms"], 6)
    contended = rng.random() < 0.1
    extra["contended"] = contended
    extra["contention"] = {"n_attempts": 2 if contended else 1, "kept_attempt": 0,
                           "stop_reason": "not contended",
                           "attempts": [{"others_cpu_cores": round(rng.random(), 3),
                                         "steal_fraction": 0.0, "score": round(rng.random(), 3),
                                         "contended": contended,
                                         "reasons": ["load"] if contended else []}]}
    return extra


def _volatile(rng: random.Random) -> dict[str, Any]:
    return {"load_avg": [round(rng.uniform(0, 2), 2) for _ in range(3)],
            "cpu_freq_mhz": round(rng.uniform(2000, 3500), 1), "mem_available_mib": 120000,
            "torch_threads": 1}


def _cell_rows(rng: random.Random, base: dict[str, Any], metrics: list[tuple],
               scale: float) -> list[dict[str, Any]]:
    if rng.random() < 0.02:  # a failed cell: one row for the headline
        return [{**base, "metric": metrics[0][0], "unit": "", "value": None, "n_samples": 0,
                 "status": rng.choice(["failed", "timeout"]), "method": "",
                 "error": "Traceback (most recent call last)\nRuntimeError: out of memory",
                 "higher_is_better": None}]
    rows = []
    for name, unit, hib in metrics:
        if unit in ("ms", "x reference", "tokens/s"):
            n = rng.randint(30, 100)
            samples = [scale * rng.uniform(0.9, 1.3) for _ in range(n)]
            med = sorted(samples)[n // 2]
            summary = {"median": med, "ci_low": med * 0.97, "ci_high": med * 1.03,
                       "p90": med * 1.2, "p99": med * 1.28, "iqr": med * 0.1, "n": n}
            rows.append({**base, "metric": name, "unit": unit, "value": med,
                         "higher_is_better": hib, "spread": med * 0.1, "spread_kind": "iqr",
                         "ci_low": med * 0.97, "ci_high": med * 1.03, "p90": med * 1.2,
                         "p99": med * 1.28, "n_samples": n, "status": "ok", "error": None,
                         "method": "perf_counter_ns median over fresh rounds",
                         "kernel_path": "sdpa", "samples": samples, "summary": summary,
                         "extra": _timed_extra(rng, med)})
        else:
            rows.append({**base, "metric": name, "unit": unit, "value": scale,
                         "higher_is_better": hib, "n_samples": 1, "status": "ok",
                         "error": None, "method": "counted", "samples": None,
                         "summary": None, "extra": {}})
    return rows


def sweep(rng: random.Random, run_id: str, fp: str, version: str, t0: datetime,
          archs: list[str], with_accuracy: bool = True) -> list[dict[str, Any]]:
    """Every row one run of the full suite stores on one machine."""
    rows: list[dict[str, Any]] = []
    device = "cuda" if "gpu" in fp else "cpu"
    for ai, arch in enumerate(archs):
        arch_config = {"n_layers": 2, "d_model": 64, "n_heads": 4, "variant": arch}
        slope = 1.0 + (ai % 5) * 0.25
        for task, (key, metrics) in EFFICIENCY.items():
            for length in LENGTHS:
                task_config = {key: length, "batch_size": 1, "warmup": 2}
                cell = {"arch": arch, "arch_config": arch_config, "task": task,
                        "task_config": task_config, "seed": 0, "device": device}
                base = {"run_id": run_id, "cell_id": _hash(cell), "config_hash":
                        _hash({k: v for k, v in cell.items() if k != "seed"}),
                        "code_version": version, "hardware_fingerprint": fp, "arch": arch,
                        "arch_version": 1, "arch_config": arch_config, "task": task,
                        "task_version": 1, "task_config": task_config, "seed": 0,
                        "device": device, "dtype": "float32", "threads": 1,
                        "volatile": _volatile(rng), "wall_s": round(rng.uniform(1, 30), 3),
                        "created_at": t0 + timedelta(seconds=len(rows))}
                scale = (length / 64) ** slope * (0.1 + ai / 50)
                if task == "flops":
                    scale = 1e6 * (1 + ai) * (length / 64) ** 0.5
                rows.extend(_cell_rows(rng, base, metrics, scale))
        if not with_accuracy:
            continue
        for task in ACCURACY:
            for seed in SEEDS:
                task_config = {"n_train": 2000, "seq_len": 128, "n_test": 500}
                cell = {"arch": arch, "task": task, "task_config": task_config, "seed": seed}
                base = {"run_id": run_id, "cell_id": _hash(cell),
                        "config_hash": _hash({k: v for k, v in cell.items() if k != "seed"}),
                        "code_version": version, "hardware_fingerprint": fp, "arch": arch,
                        "arch_version": 1, "arch_config": arch_config, "task": task,
                        "task_version": 1, "task_config": task_config, "seed": seed,
                        "device": device, "dtype": "float32", "threads": 1,
                        "volatile": _volatile(rng), "wall_s": round(rng.uniform(10, 90), 3),
                        "created_at": t0 + timedelta(seconds=len(rows))}
                acc = min(1.0, max(0.0, rng.gauss(0.4 + ai / 40, 0.1)))
                extra = {"chance": 0.1, "floor": 0.2, "floor_strategy": "most frequent",
                         "wilson95": [max(0.0, acc - 0.04), min(1.0, acc + 0.04)],
                         "lr": rng.choice([1e-3, 3e-3]), "lr_grid": [1e-3, 3e-3, 1e-2],
                         "num_params": 100000 + ai, "token_budget": 1000000, "steps": 500,
                         "batch_size": 16, "seq_len": 128,
                         "not_converged": rng.random() < 0.1,
                         "loss_curve": [round(rng.uniform(0, 3), 4) for _ in range(10)]}
                rows.append({**base, "metric": "accuracy", "unit": "fraction", "value": acc,
                             "higher_is_better": True, "n_samples": 500, "status": "ok",
                             "error": None, "method": "exact match over test items",
                             "samples": None, "summary": {"correct": int(acc * 500)},
                             "extra": extra})
    return rows


def generate(path: Path, n_rows: int, seed: int = 0) -> None:
    """A database of about ``n_rows`` results (exactly, after trimming the last run)."""
    rng = random.Random(seed)
    if path.exists():
        path.unlink()
    engine = db.connect(str(path))
    db.store_catalog(engine, [], [{**catalog.task_entry(n), "digest": "bench"}
                                  for n in tasks.names()])  # what the tasks declare
    for fp in FINGERPRINTS:
        db.ensure_hardware(engine, fp, {"cpu_model": f"Bench CPU {fp}", "logical_cpus": 16,
                                        "torch": "2.x"})
        db.store_peak(engine, fp, "cpu", "float32", 1,
                      {"flops_per_s": 5e10, "method": "matmul", "n_samples": 5})
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    written, i = 0, 0
    results_t, runs_t = db.Result.__table__, db.Run.__table__
    columns = [c.name for c in results_t.columns if c.name != "id"]
    while written < n_rows:
        fp = FINGERPRINTS[i % len(FINGERPRINTS)]
        version = f"git:{i:07x}"
        run_id = f"run{i:05d}"
        archs = ARCHS if i % 4 else rng.sample(ARCHS, 8)  # some partial runs
        rows = sweep(rng, run_id, fp, version, t0 + timedelta(hours=i), archs)
        rows = [db.with_setting_id(db.sanitize_result(r)) for r in rows[:n_rows - written]]
        rows = [{c: r.get(c) for c in columns} for r in rows]  # one key set: executemany
        with db._writing(engine) as conn:
            conn.execute(insert(runs_t).values(
                run_id=run_id, suite="full", code_version=version, hardware_fingerprint=fp,
                started_at=t0 + timedelta(hours=i), finished_at=t0 + timedelta(hours=i + 1),
                status="finished", n_cells=len(rows), heartbeat_at=t0 + timedelta(hours=i)))
            conn.execute(insert(results_t), rows)
        written += len(rows)
        i += 1
    engine.dispose()


def new_run_rows(run_id: str) -> list[dict[str, Any]]:
    """What a later ``archbench run --suite quick`` stores: prefill sweeps and one accuracy
    task on one machine, under a new code version."""
    rng = random.Random(1234)
    rows = sweep(rng, run_id, FINGERPRINTS[0], "git:newrun", datetime(2027, 1, 1,
                                                                      tzinfo=timezone.utc),
                 ARCHS, with_accuracy=False)
    return [r for r in rows if r["task"] in ("prefill_latency", "flops")]


def cached(path: Path, n_rows: int) -> Path:
    stamp = path.with_name(path.name + ".rows")
    if path.exists() and stamp.exists() and stamp.read_text().strip() == f"{n_rows} {SHAPE}":
        return path
    t = time.perf_counter()
    generate(path, n_rows)
    stamp.write_text(f"{n_rows} {SHAPE}")
    print(f"generated {n_rows} rows into {path} in {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    return path


def _digest(root: Path) -> tuple[str, int, int]:
    """(sha256 over every file's path and bytes, number of files, bytes) of a folder."""
    h, n, size = hashlib.sha256(), 0, 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            h.update(str(path.relative_to(root)).encode() + b"\0" + data)
            n, size = n + 1, size + len(data)
    return h.hexdigest(), n, size


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--db", type=Path, default=None,
                    help="cached database (default: $TMPDIR/archbench_scale_<rows>.db)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="site,csv,parquet,jsonl,derive")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from harness import derive, export, render

    path = args.db or Path(tempfile.gettempdir()) / f"archbench_scale_{args.rows}.db"
    cached(path, args.rows)
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="archbench_scale_"))
    figures: dict[str, list[float]] = {}
    try:
        engine = db.connect(str(path))
        if "site" in only:
            figures["site"] = _timed(lambda: render.build(engine, work / "site"), args.repeat)
            first = _digest(work / "site")
            render.build(engine, work / "site")
            print(f"(site: {first[1]} files, {first[2] / 2**20:.1f} MiB; a second build is "
                  f"{'byte-identical' if _digest(work / 'site') == first else 'DIFFERENT'})")
        for fmt in ("csv", "parquet", "jsonl"):
            if fmt in only:
                figures[f"export {fmt}"] = _timed(
                    lambda fmt=fmt: export.export(engine, work / f"out.{fmt}", fmt),
                    args.repeat)
        engine.dispose()
        if "derive" in only:  # on a copy: the new run must not enter the cached database
            copy = work / "derive.db"
            shutil.copyfile(path, copy)
            engine = db.connect(str(copy))
            run_id = "newrun"
            db.start_run(engine, run_id, "quick", "git:newrun", FINGERPRINTS[0], 0)
            db.store(engine, new_run_rows(run_id))
            db.finish_run(engine, run_id, "finished")
            takes_run = "run_id" in inspect.signature(derive.refresh).parameters
            step = ((lambda: derive.refresh(engine, "git:newrun", run_id=run_id)) if takes_run
                    else (lambda: derive.refresh(engine, "git:newrun")))
            figures["derive (post-run)"] = _timed(step, args.repeat)
            with engine.connect() as conn:
                n_new = conn.scalar(select(func.count()).select_from(db.Result.__table__)
                                    .where(db.Result.__table__.c.run_id == run_id))
            engine.dispose()
            print(f"(derive: new run of {n_new} rows; "
                  f"{'incremental' if takes_run else 'full recompute'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rows} rows, {path}, median of {args.repeat} (min..max), seconds")
    print(f"{'step':<22}{'median':>9}{'min':>9}{'max':>9}")
    for name, times in figures.items():
        print(f"{name:<22}{statistics.median(times):>9.3f}{min(times):>9.3f}"
              f"{max(times):>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
