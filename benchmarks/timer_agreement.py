"""Does the harness's timer agree with torch.utils.benchmark? (issue: latency method check)

Times the same transformer prefill (B=1, T=2048, d_model 64, 2 layers, float32, 2 threads) three
ways, in one process, the order rotated every round so no timer always runs first:

- ``harness``: ``instruments.timing.time_fn`` as the tasks call it (reference interleaved, adaptive
  sample count; contention is probed around each round here instead of re-measuring);
- ``harness-plain``: ``time_fn(reference=None, ci_target=None, contention=None)``, 15 samples:
  the timer alone, as before the busy-machine issue (but with gc off in timed blocks);
- ``tub``: ``torch.utils.benchmark.Timer.blocked_autorange(min_run_time)``.

It prints each round's medians and ratios to ``tub``, then the median over rounds of the per-round
ratios with their range (and a 95% order-statistic CI from 6 rounds on), and whether they lie
within 3%. It also counts garbage collections during untimed calls of the same workload:
``timeit`` (and so ``tub``) disables gc while timing, and the harness now does too, so any
collections counted here are what the harness timed before and ``tub`` never did.

What else differs between the two timers: ``tub`` sizes blocks by timer overhead
(``_estimate_block_size``: x10 steps until the overhead is <= 1e-4 of a block and a block lasts
>= min_run_time / 1000), so a >= 1 ms call is usually timed one call per block, for
min_run_time seconds; the harness calibrates blocks to >= min_sample_s (10 ms) and takes n
samples (adaptive). Both report the median of per-block means (type-7 quantile). For calls
under 10 ms the harness's blocks hold several calls while ``tub``'s hold one, and under
right-skewed noise a median of k-call means sits above a median of single calls.

Run: ``python benchmarks/timer_agreement.py [--rounds 6] [--seq-len 2048] [--quick]``; run it
on a quiet machine (it reports the others' CPU it saw each round).
"""

from __future__ import annotations

import argparse
import gc
import statistics

import torch
import torch.utils.benchmark as tb

import architectures
from tasks.instruments.contention import ContentionProbe
from tasks.instruments.stats import median_ci
from tasks.instruments.timing import threads_in_use, time_fn

TOLERANCE = 0.03


def gc_collections(fn, calls: int) -> dict[int, int]:
    """Collections per generation during ``calls`` untimed calls with gc enabled."""
    counts = {0: 0, 1: 0, 2: 0}

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            counts[info["generation"]] += 1

    gc.callbacks.append(cb)
    try:
        for _ in range(calls):
            fn()
    finally:
        gc.callbacks.remove(cb)
    return counts


def ratio_line(name: str, ratios: list[float]) -> str:
    mid = statistics.median(ratios)
    ci = median_ci(ratios) if len(ratios) >= 6 else None
    ci_text = f", 95% CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    verdict = "within" if abs(mid - 1) <= TOLERANCE else "OUTSIDE"
    return (f"{name:>14} / tub: median {mid:.3f} over {len(ratios)} rounds, range "
            f"[{min(ratios):.3f}, {max(ratios):.3f}]{ci_text} -> {verdict} {TOLERANCE:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-run-time", type=float, default=1.0, help="tub's, seconds")
    ap.add_argument("--quick", action="store_true",
                    help="sanity run: T=128, 2 rounds, min_run_time 0.2 s, short harness budget")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seq_len, args.min_run_time = 2, 128, 0.2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = architectures.build("transformer", d_model=64, n_layers=2).eval()
    tokens = torch.randint(0, 256, (1, args.seq_len), generator=torch.Generator().manual_seed(0))
    budget = 3.0 if args.quick else 20.0
    probe = ContentionProbe("cpu", threads=threads_in_use("cpu"))

    def call() -> None:
        model(tokens)

    def harness() -> tuple[float, str]:
        t = time_fn(call, n_samples=15, min_sample_s=0.01, max_total_s=budget, contention=None)
        med = statistics.median(t.samples_s)
        ratio = med / statistics.median(t.ref_samples_s)
        return med * 1e3, f"n={len(t.samples_s)} iters={t.iters} vs_ref={ratio:.3f}"

    def plain() -> tuple[float, str]:
        t = time_fn(call, n_samples=15, min_sample_s=0.01, max_total_s=budget,
                    reference=None, ci_target=None, contention=None)
        return statistics.median(t.samples_s) * 1e3, f"n={len(t.samples_s)} iters={t.iters}"

    def tub() -> tuple[float, str]:
        timer = tb.Timer("model(tokens)", globals={"model": model, "tokens": tokens},
                         num_threads=args.threads)
        m = timer.blocked_autorange(min_run_time=args.min_run_time)
        return m.median * 1e3, f"blocks={len(m.raw_times)} calls/block={m.number_per_run}"

    timers = {"harness": harness, "harness-plain": plain, "tub": tub}
    names = list(timers)
    results: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for _ in range(3):
            call()  # every timer warms up too; this only keeps round 0 from paying first touch
        counts = gc_collections(call, 50)
        print(f"gc collections in 50 untimed calls (gc enabled): gen0 {counts[0]}, "
              f"gen1 {counts[1]}, gen2 {counts[2]}")
        for r in range(args.rounds):
            order = names[r % 3:] + names[:r % 3]
            before = probe.start()
            notes = {}
            for name in order:
                ms, notes[name] = timers[name]()
                results[name].append(ms)
            figs = probe.stop(before)
            line = "  ".join(f"{n} {results[n][-1]:.3f} ms ({notes[n]})" for n in names)
            print(f"round {r} (order {','.join(order)}; others' CPU "
                  f"{figs['others_cpu_cores']} cores, contended {figs['contended']}): {line}")
    for name in ("harness", "harness-plain"):
        ratios = [a / b for a, b in zip(results[name], results["tub"], strict=True)]
        print(ratio_line(name, ratios))


if __name__ == "__main__":
    main()
