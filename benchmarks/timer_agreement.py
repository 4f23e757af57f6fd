"""Does the harness's timer agree with torch.utils.benchmark? (issue: latency method check)

Times the same transformer prefill (B=1, T=2048, d_model 64, 2 layers, float32, 2 threads) with
``harness.timing.time_fn`` and with ``torch.utils.benchmark.Timer.blocked_autorange``, alternating
the two over rounds in one process, and prints both medians and their ratio.

Run: ``python benchmarks/timer_agreement.py [--rounds 3] [--seq-len 2048]``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.utils.benchmark as tb

import architectures
from harness.timing import time_fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = architectures.build("transformer", d_model=64, n_layers=2).eval()
    tokens = torch.randint(0, 256, (1, args.seq_len), generator=torch.Generator().manual_seed(0))
    ours, theirs = [], []
    with torch.inference_mode():
        for _ in range(args.rounds):
            t = time_fn(lambda: model(tokens), n_samples=15, min_sample_s=0.01)
            ours.append(statistics.median(t.samples_s) * 1e3)
            timer = tb.Timer("model(tokens)", globals={"model": model, "tokens": tokens},
                             num_threads=args.threads)
            theirs.append(timer.blocked_autorange(min_run_time=1.0).median * 1e3)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        print(f"round {i}: harness {a:.3f} ms  torch.utils.benchmark {b:.3f} ms  ratio {a / b:.3f}")
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"median over rounds: harness {a:.3f} ms, torch.utils.benchmark {b:.3f} ms, "
          f"ratio {a / b:.3f} ({'within' if abs(a / b - 1) <= 0.10 else 'OUTSIDE'} 10%)")


if __name__ == "__main__":
    main()
