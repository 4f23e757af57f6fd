"""False alarms of `archbench nightly` on unchanged code: N nights in a row, nothing edited.

Each night is a real `archbench nightly` (subprocess) of a small efficiency suite of real
variants with `rerun: all`, against one database. Night 1 has no history; every later night
compares each series (machine x setting x metric) with the nights before it. Nothing changed,
so every reported change is a false alarm: the script counts suspicions (first stage) and
confirmed changes (after the confirm run), per series comparison and per night.

    python benchmarks/nightly_false_alarms.py --nights 21 [--out alarms.json]

Never run it while tests or other work load the machine unless that load is what you want to
measure (the figures in docs/regressions.md say which it was).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = {
    "name": "nightly-bench", "hardware": {"device": "cpu", "dtype": "float32", "threads": 1},
    "seeds": [0], "timeout_s": 300, "model": {"d_model": 64, "n_layers": 2},
    "architectures": {"transformer": {}, "mamba": {}, "gla": {}},
    "tasks": {"prefill_latency": {"seq_len": 128}, "decode_latency": {"context_len": 128}},
}
WATCHED = ["latency_ms", "latency_vs_ref"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nights", type=int, default=21)
    p.add_argument("--out", help="write the per-night figures here (JSON)")
    p.add_argument("--work", help="folder for the database and reports (default: a temp dir)")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="archbench-nightly-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    suite = work / "nightly-bench.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    config = work / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "suites": [str(suite)], "rerun": "all", "site": None, "report": "reports",
        "regression": {"confirm": True, "metrics": WATCHED}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nights = []
    for night in range(1, args.nights + 1):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "--db",
                               str(work / "bench.db"), "nightly", "--config", str(config)],
                              cwd=work, env=env, capture_output=True, text=True)
        report = json.loads(sorted((work / "reports").glob("*.json"))[-1].read_text())
        changes = report["changes"]
        row = {"night": night, "exit": proc.returncode, "wall_s": time.perf_counter() - start,
               "series": report["counts"].get("series", 0),
               "compared": report["counts"].get("series", 0)
               - report["counts"].get("insufficient", 0),
               "suspected": len(changes),
               "confirmed": sum(1 for c in changes if c["confirmed"]),
               "changes": [(c["arch"], c["task"], c["metric"], round(c["rel_change"], 3),
                            c["confirmed"]) for c in changes],
               "errors": report["errors"]}
        nights.append(row)
        print(f"night {night:2d}: exit {row['exit']}, {row['compared']}/{row['series']} series "
              f"compared, {row['suspected']} suspected, {row['confirmed']} confirmed "
              f"({row['wall_s']:.0f} s) {row['changes'] or ''}", flush=True)
    compared = sum(n["compared"] for n in nights)
    suspected = sum(n["suspected"] for n in nights)
    confirmed = sum(n["confirmed"] for n in nights)
    failing = sum(1 for n in nights[1:] if n["exit"] != 0)
    print(f"\n{len(nights) - 1} unchanged comparisons (nights 2..{len(nights)}), {compared} "
          f"series comparisons: {suspected} suspected ({suspected / max(compared, 1):.1%}), "
          f"{confirmed} confirmed ({confirmed / max(compared, 1):.1%}); nights exiting "
          f"non-zero: {failing} of {len(nights) - 1}")
    if args.out:
        Path(args.out).write_text(json.dumps({"nights": nights, "compared": compared,
                                              "suspected": suspected, "confirmed": confirmed,
                                              "failing_nights": failing}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
