"""The machine's own matmul peak, measured once per (hardware, device, dtype, threads).

Achieved FLOP/s of a variant is only meaningful against what this machine can do, so the
peak is measured here (a square matmul, timed like any other phase), never hard-coded.
Measured inside the first cell that needs it (``Task.needs_peak``; ``harness.cell``).
"""

from __future__ import annotations

import statistics
from typing import Any

from tasks.instruments.context import DTYPES
from tasks.instruments.timing import sync_for, time_fn

SIZE = 1024  # square matmul edge: large enough to reach BLAS peak, small enough to be quick


def measure(device: str, dtype: str, threads: int, size: int = SIZE) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device=device, dtype=DTYPES[dtype])
            for _ in range(2))
    timing = time_fn(lambda: a @ b, sync=sync_for(device), warmup=3, min_sample_s=0.05,
                     n_samples=9, max_total_s=10.0, reference=None, contention=None,
                     ci_target=None)
    flops = 2 * size**3
    return {"flops_per_s": flops / statistics.median(timing.samples_s),
            "method": f"{size}x{size} @ {size}x{size} matmul, 2*n^3 FLOP / median of "
                      f"{len(timing.samples_s)} samples; " + timing.method,
            "n_samples": len(timing.samples_s)}
