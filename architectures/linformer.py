"""Linformer: bidirectional multi-head softmax attention whose keys and values are first
projected along the sequence to k rows by learned k x max_seq_len matrices E and F (one pair per
layer, shared by its heads), so the attention map is T x k instead of T x T and cost is linear
in T. A sequence shorter than max_seq_len uses the first T columns; longer ones are refused.
There are no rotary embeddings: position enters through the columns of E and F. Every output
depends on every token, so the variant is bidirectional (classification tasks only) and has no
token-by-token decoding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import Variant, integer, register
from .transformer import check_heads

__all__ = ["VARIANT", "LinformerConfig", "LinformerMixer"]


@dataclass(frozen=True)
class LinformerConfig:
    n_heads: int = integer(4)  # head width = d_model / n_heads
    k: int = integer(32)  # rows keys and values are projected to along the sequence
    max_seq_len: int = integer(2048)  # columns of E and F: the longest sequence accepted

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


_NO_DECODING = ("linformer is bidirectional (every output depends on the whole sequence): "
                "it has no token-by-token decoding")


class LinformerMixer(nn.Module):
    """Multi-head attention over k sequence-projected keys and values; no decoding state
    (`init_state` is the empty dict)."""

    kernel_path = "sdpa"

    def __init__(self, d_model: int, n_heads: int, n_layers: int, k: int, max_seq_len: int):
        super().__init__()
        check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.max_seq_len = max_seq_len
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        # the paper's projection R with i.i.d. N(0, 1/k) entries (its Theorem 1)
        self.E = nn.Parameter(torch.randn(k, max_seq_len) / math.sqrt(k))
        self.F = nn.Parameter(torch.randn(k, max_seq_len) / math.sqrt(k))
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(2 * n_layers))

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        if t > self.max_seq_len:
            raise ValueError(
                f"linformer: sequence length {t} exceeds max_seq_len={self.max_seq_len}; "
                f"build it with max_seq_len >= {t}"
            )
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k = self.E[:, :t] @ k  # (k, T) @ (B, H, T, hd) -> (B, H, k, hd)
        v = self.F[:, :t] @ v
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, hd)
        return self.out(y.transpose(1, 2).reshape(b, t, self.d_model))  # (B, T, D)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        return {}  # nothing to decode from

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(_NO_DECODING)

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """No decoding state to build: prefill would start a decode that `step` cannot go on."""
        raise NotImplementedError(_NO_DECODING)

    def state_size(self, seq_len: int) -> int:
        return 0


def _make(cfg: LinformerConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return LinformerMixer(d_model, cfg.n_heads, n_layers, cfg.k, cfg.max_seq_len)


VARIANT = register(
    Variant(
        name="linformer",
        family="low-rank attention",
        version=1,
        papers=(
            "Linformer: Self-Attention with Linear Complexity",
            "Long Range Arena: A Benchmark for Efficient Transformers",
            "Greenformers: Improving Computation and Memory Efficiency in Transformer Models "
            "via Low-Rank Approximation",
        ),
        config_cls=LinformerConfig,
        make_mixer=_make,
        doc=__doc__,
        causal=False,
    )
)
