"""How fast the synthetic tasks make their data (the split sizes a capability suite asks for).

Run: `python -m pytest benchmarks/bench_generators.py --benchmark-only` (not in `make test`).
"""

from __future__ import annotations

from architectures.configs import build_config
from tasks import listops


def test_listops_twenty_thousand_rows(benchmark) -> None:
    cfg = build_config(listops.Config, {}, listops.__name__)
    seq, _ = benchmark(listops.generate, cfg, 20_000, 0)
    assert seq.shape[0] == 20_000
