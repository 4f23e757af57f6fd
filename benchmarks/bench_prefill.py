"""Prefill latency of every architecture's `forward` on CPU (pytest-benchmark; not in `make test`).

Run: `python -m pytest benchmarks/bench_prefill.py --benchmark-only`. Shapes are data; every model
is built and every shape run once before anything is timed; float32, 2 threads, inference mode.
"""

from __future__ import annotations

import pytest
import torch

import architectures

THREADS = 2
MODEL = {"d_model": 64, "n_layers": 2}  # backbone keys shared by every case
CASES = {  # case id -> (architecture, config)
    "transformer": ("transformer", {}),
    "linear_attention": ("linear_attention", {}),
    "mamba": ("mamba", {}),
    "mamba-reference": ("mamba", {"scan": "reference"}),
    "hybrid": ("hybrid", {}),
}
SHAPES = [(1, 1024), (1, 4096), (8, 512)]  # (batch, seq_len)


def _tokens(batch: int, seq_len: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, seq_len), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models() -> dict[str, architectures.LanguageModel]:
    """Every case built (seed 0) and warmed up on every shape before the first timing."""
    torch.set_num_threads(THREADS)
    built = {}
    for case, (name, config) in CASES.items():
        torch.manual_seed(0)
        built[case] = architectures.build(name, **MODEL, **config).eval()
    with torch.inference_mode():
        for model in built.values():
            for batch, seq_len in SHAPES:
                model(_tokens(batch, seq_len))
    return built


@pytest.mark.parametrize(("batch", "seq_len"), SHAPES, ids=[f"B{b}-T{t}" for b, t in SHAPES])
@pytest.mark.parametrize("case", list(CASES))
def test_prefill(benchmark, models, case: str, batch: int, seq_len: int) -> None:
    model = models[case]
    tokens = _tokens(batch, seq_len)
    benchmark.extra_info.update(
        kernel_path=model.kernel_path, threads=torch.get_num_threads(), tokens=batch * seq_len
    )
    with torch.inference_mode():
        benchmark.pedantic(model, args=(tokens,), rounds=7, warmup_rounds=1, iterations=1)
