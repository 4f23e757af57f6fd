"""Decode latency at context L = 8,192 over L = 512, every causal variant, through the CLI.

Run on a quiet machine: ``python benchmarks/decode_growth.py [--db /tmp/decode.db]``. It runs
``archbench run`` on a generated suite (d_model 64, 2 layers, float32, 2 threads,
``decode_latency`` swept over context_len [512, 8192]; the transformer also with
``kv_cache: concat``), then prints per variant the median latency at both lengths, their ratio,
both ratios to the interleaved reference, and the contended marks. A recurrent variant's step
costs the same at any L (ratio ~1); attention's grows with the cache it attends over; a
concatenating cache adds a copy of the whole cache per step.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import architectures
from harness import db

LENGTHS = [512, 8192]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    names = [n for n in architectures.names() if getattr(architectures.get(n), "causal", True)]
    archs = {n: {} for n in names}
    with tempfile.TemporaryDirectory(prefix="decode-growth-") as tmp:
        url = args.db or str(Path(tmp, "decode.db"))
        path = Path(tmp, "decode-growth.yaml")
        body = {"name": "decode-growth",
                "hardware": {"device": "cpu", "dtype": "float32", "threads": args.threads},
                "seeds": [0], "timeout_s": 600, "model": {"d_model": 64, "n_layers": 2},
                "architectures": archs,
                "tasks": {"decode_latency": {"sweep": {"context_len": LENGTHS}}}}
        path.write_text(yaml.safe_dump(body))
        concat = Path(tmp, "decode-concat.yaml")
        concat.write_text(yaml.safe_dump({
            **body, "name": "decode-growth-concat",
            "architectures": {"transformer": {"kv_cache": "concat"}}}))
        for suite in (path, concat):
            proc = subprocess.run([sys.executable, "-m", "harness.cli", "--db", url, "run",
                                   "--suite", str(suite), "--no-progress", "--allow-failures"],
                                  check=False)
            if proc.returncode not in (0, 1):
                raise SystemExit(proc.returncode)
        rows = [r for r in db.results(db.connect(url)) if r["task"] == "decode_latency"
                and r["metric"] in ("latency_ms", "latency_vs_ref")]
    table: dict[tuple[str, str], dict[tuple[str, int], dict]] = {}
    for r in rows:
        key = (r["arch"], r["kernel_path"] or "")
        table.setdefault(key, {})[(r["metric"], r["task_config"]["context_len"])] = r
    print(f"{'variant':<18} {'kernel path':<28} {'ms@512':>8} {'ms@8192':>8} {'ratio':>6} "
          f"{'ref-ratio':>9}  marks")
    for (arch, path), cells in sorted(table.items()):
        lat = [cells.get(("latency_ms", n)) for n in LENGTHS]
        ref = [cells.get(("latency_vs_ref", n)) for n in LENGTHS]
        if not all(x and x["value"] for x in lat):
            missing = [x and x["status"] for x in lat]
            print(f"{arch:<18} {path:<28} (missing: {missing})")
            continue
        ratio = lat[1]["value"] / lat[0]["value"]
        rr = (ref[1]["value"] / ref[0]["value"]) if all(x and x["value"] for x in ref) else None
        marks = ",".join(f"{n}:{'contended' if (x['extra'] or {}).get('contended') else ''}"
                         f"{'noisy' if (x['extra'] or {}).get('noisy') else ''}"
                         for n, x in zip(LENGTHS, lat, strict=True)
                         if (x["extra"] or {}).get("contended") or (x["extra"] or {}).get("noisy"))
        print(f"{arch:<18} {path:<28} {lat[0]['value']:8.3f} {lat[1]['value']:8.3f} "
              f"{ratio:6.2f} {rr if rr is None else round(rr, 2)!s:>9}  {marks}")


if __name__ == "__main__":
    main()
