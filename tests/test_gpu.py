"""CUDA paths, run for real where a GPU is present (marker `gpu`); skipped with a reason elsewhere.

These are the checks a device session runs: the variants on CUDA, the allocator-peak memory
probe, the NVML energy counter and the whole pipeline with ``--device cuda``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import architectures
from harness import db
from harness.cli import main
from tests.conftest import write_suite

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]


@pytest.mark.parametrize("name", [n for n in architectures.names()
                                  if architectures.get(n).causal])
@torch.no_grad()
def test_step_matches_forward_on_cuda(name: str) -> None:
    keys = set(architectures.config_keys(name))
    fixed = architectures.fixed_keys(name)
    cfg = {k: v for k, v in {"vocab_size": 31, "d_model": 32, "n_layers": 2}.items()
           if k in keys and k not in fixed}
    torch.manual_seed(0)
    model = architectures.build(name, **cfg).cuda().eval()
    x = torch.randint(0, 31, (2, 24), device="cuda")
    logits = model(x)
    state = model.init_state(2)
    stepped = []
    for t in range(x.shape[1]):
        out, state = model.step(x[:, t : t + 1], state)
        stepped.append(out)
    assert (torch.cat(stepped, dim=1) - logits).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_cuda_peak_memory_and_energy_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    suite_path = write_suite(tmp_path / "gpu.yaml", ["transformer", "mamba"], {
        "prefill_latency": {"seq_len": 256, "n_samples": 5},
        "peak_memory": {"seq_len": 1024},
        "energy": {"seq_len": 1024, "min_window_s": 1.0},
    })
    assert main(["--db", url, "run", "--suite", str(suite_path), "--device", "cuda",
                 "--no-progress"]) == 0
    rows = db.results(db.connect(url))
    peak = [r for r in rows if r["metric"] == "peak_memory_mib"]
    assert peak and all(r["status"] == "ok" and r["value"] > 0 for r in peak)
    assert all(r["extra"]["max_allocated_bytes"] > 0 for r in peak)
    energy = [r for r in rows if r["metric"] == "energy_per_token_j"]
    for r in energy:  # a meter that works gives a positive reading; otherwise a stated reason
        assert (r["status"] == "ok" and r["value"] > 0) or (r["status"] == "unavailable"
                                                            and r["error"])
    assert all(r["device"] == "cuda" for r in rows)
