"""Prefill latency of every registered architecture's `forward` on CPU (pytest-benchmark).

Run: `python -m pytest benchmarks/bench_prefill.py --benchmark-only` (not in `make test`).
Cases are every registered variant at its defaults, plus, at T = 4096 only, each variant whose
config has a choice with a "reference" option (the `impl` key) run with the reference, so
fast and reference forms can be compared. Shapes are data; every model is built and every
shape run once before anything is timed; float32, 2 threads, inference mode, B = 1,
d_model 64, 2 layers. A case that cannot run a shape is skipped with the reason.
`BENCH_PREFILL_LENGTHS=64,128` overrides the lengths (smoke runs).
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import pytest
import torch

import architectures

THREADS = 2
MODEL = {"d_model": 64, "n_layers": 2}  # backbone keys shared by every case
LENGTHS = [int(t) for t in os.environ.get("BENCH_PREFILL_LENGTHS", "1024,4096,16384").split(",")]
REFERENCE_LENGTH = 4096 if 4096 in LENGTHS else LENGTHS[0]  # fast vs reference compared here
BATCH = 1


def reference_options(name: str) -> dict[str, str]:
    """Config keys of `name` whose choices include "reference", each set to it."""
    return {f.name: "reference" for f in fields(architectures.get(name).config_cls)
            if "reference" in f.metadata.get("choices", ())}


def _cases() -> dict[str, tuple[str, dict[str, Any], list[int]]]:
    """case id -> (architecture, config, lengths); sequence-sized weights fit the longest T."""
    cases = {}
    for name in architectures.names():
        sized = {"max_seq_len": max(LENGTHS)} if "max_seq_len" in \
            architectures.config_keys(name) else {}
        cases[name] = (name, sized, LENGTHS)
        for key, value in reference_options(name).items():
            cases[f"{name}-{key}={value}"] = (name, {**sized, key: value}, [REFERENCE_LENGTH])
    return cases


CASES = _cases()
PARAMS = [(case, t) for case, (_, _, lengths) in CASES.items() for t in lengths]


def _tokens(seq_len: int) -> torch.Tensor:
    return torch.randint(0, 256, (BATCH, seq_len), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[architectures.LanguageModel | None, dict[int, str]]]:
    """Each case built (seed 0) and run once on each of its shapes before the first timing;
    case -> (model or None, {seq_len: why it cannot run})."""
    torch.set_num_threads(THREADS)
    built: dict[str, tuple[architectures.LanguageModel | None, dict[int, str]]] = {}
    for case, (name, config, lengths) in CASES.items():
        torch.manual_seed(0)
        try:
            model = architectures.build(name, **MODEL, **config).eval()
        except (ValueError, RuntimeError) as err:  # ConfigError is a ValueError
            built[case] = (None, dict.fromkeys(lengths, f"cannot build: {err}"))
            continue
        cannot: dict[int, str] = {}
        with torch.inference_mode():
            for seq_len in lengths:
                try:
                    model(_tokens(seq_len))
                except (ValueError, RuntimeError, MemoryError) as err:
                    cannot[seq_len] = f"{type(err).__name__}: {err}"
        built[case] = (model, cannot)
    return built


@pytest.mark.parametrize(("case", "seq_len"), PARAMS, ids=[f"{c}-T{t}" for c, t in PARAMS])
def test_prefill(benchmark, models, case: str, seq_len: int) -> None:
    model, cannot = models[case]
    if model is None or seq_len in cannot:
        pytest.skip(f"{case} at T={seq_len}: {cannot[seq_len]}")
    tokens = _tokens(seq_len)
    benchmark.group = f"T={seq_len}"
    benchmark.extra_info.update(
        kernel_path=model.kernel_path, threads=torch.get_num_threads(), tokens=BATCH * seq_len
    )
    with torch.inference_mode():
        benchmark.pedantic(model, args=(tokens,), rounds=7, warmup_rounds=1, iterations=1)
