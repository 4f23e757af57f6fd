"""The flops task: counts agree with the analytic transformer count, rows say how they were made."""

from __future__ import annotations

import pytest

import architectures
import tasks
from architectures.configs import build_config
from tasks.instruments.context import CellContext

D, LAYERS, VOCAB, T = 64, 2, 256, 256


def run_flops(arch: str, seq_len: int = T, **config: object) -> dict[str, tasks.Metric]:
    task = tasks.get("flops")
    ctx = CellContext(arch=arch, arch_config={"d_model": D, "n_layers": LAYERS,
                                              "vocab_size": VOCAB, **config},
                      seed=0, device="cpu", dtype="float32", threads=1)
    metrics = task.run(build_config(task.config_cls, {"seq_len": seq_len}, "flops"), ctx)
    return {m.name: m for m in metrics}


def transformer_forward_flops_per_token(seq_len: int) -> int:
    """2 x (matmul weights: q, k, v, out = 4 D^2 and MLP = 8 D^2 per layer, plus the head D V),
    plus attention per layer: Q K^T and A V, each 2 T D per token (dense, as torch counts it)."""
    matmul_params = LAYERS * 12 * D * D + D * VOCAB
    return 2 * matmul_params + LAYERS * 4 * seq_len * D


def test_transformer_forward_flops_match_the_analytic_count() -> None:
    rows = run_flops("transformer")
    assert tasks.get("flops").headline == "forward_flops_per_token"
    expected = transformer_forward_flops_per_token(T)
    assert rows["forward_flops_per_token"].value == pytest.approx(expected, rel=0.03)
    # backward costs about twice the forward
    assert 2.5 < rows["train_flops_per_token"].value / expected < 3.6


def test_flops_rows_carry_unit_method_and_op_split() -> None:
    rows = run_flops("mamba", seq_len=32)
    assert set(rows) == {"forward_flops_per_token", "train_flops_per_token"}
    for m in rows.values():
        assert m.status == "ok" and m.unit == "FLOP/token" and m.higher_is_better is False
        assert "torch.utils.flop_counter" in m.method and "elementwise" in m.method
        assert sum(m.extra["by_op"].values()) == m.extra["total_flops"] > 0


def test_fused_lstm_kernel_is_counted() -> None:
    """torch counts the fused CPU LSTM (mkldnn) as zero; here every LSTM weight matrix
    multiplies each token once."""
    rows = run_flops("lstm", seq_len=32)
    hidden = architectures.resolve_config("lstm", d_model=D).get("expand", 1) * D
    lstm_weights = 4 * hidden * (D + hidden)  # input and recurrent gate matrices, per layer
    out_proj = hidden * D if hidden != D else 0
    matmul_params = LAYERS * (lstm_weights + out_proj + 8 * D * D) + D * VOCAB
    assert rows["forward_flops_per_token"].value == pytest.approx(2 * matmul_params, rel=0.03)
