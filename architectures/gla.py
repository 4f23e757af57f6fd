"""Gated linear attention (GLA): a linear-attention state with a data-dependent decay per key dim,
S_t = diag(alpha_t) S_{t-1} + k_t v_t^T and o_t = q_t S_t, where alpha_t = sigmoid(x_t W1 W2 + b)
^ (1/16) comes from a rank-16 projection of the input (the 1/16 power keeps the decays near 1 at
init). Head outputs pass a per-head GroupNorm and a swish output gate before the output
projection. Decoding keeps one d_k x d_v state per head: constant in context length. The parallel
form is chunked: inside each chunk an L x L x d_k tensor of decays exp(G_t - G_s), s <= t, from
the cumulative log decays G (every exponent <= 0, so nothing overflows), and a loop over chunks
carries the state; a sequential recurrence sits beside it as the reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._decay_attention import (
    DecayAttentionMixer,
    check_head_split,
)

__all__ = ["VARIANT", "GLAConfig", "GLAMixer"]

GATE_RANK = 16  # rank of the decay projection, as in the GLA paper
GATE_NORMALIZER = 16  # alpha = sigmoid(.)^(1 / GATE_NORMALIZER)


@dataclass(frozen=True)
class GLAConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d x d per head
    # time steps per chunk (speed only); the intra-chunk tensor is L x L x d_k per chunk, so small
    # chunks win: on CPU, L = 8 ran 2x faster than 16 and 4x faster than 64 at T = 16K, d_model 64
    chunk_size: int = integer(8)
    impl: str = choice("fast", IMPLS)  # fast: the chunked form; reference: the recurrence

    def check(self, d_model: int) -> None:
        check_head_split(d_model, self.n_heads)


class GLAMixer(DecayAttentionMixer):
    """GLA layer after fla's `GatedLinearAttention`, key width = value width;
    state {"kv": (B, H, d, d)}."""

    # the decay's bias sets its time scale at init; its low-rank projection is a data-dependent
    # weight, decayed as mamba's dt_proj weight is
    no_weight_decay = ("decay.1.bias",)

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, impl: str) -> None:
        super().__init__(d_model, n_heads, chunk_size, impl)
        self.decay = nn.Sequential(
            nn.Linear(d_model, GATE_RANK, bias=False), nn.Linear(GATE_RANK, d_model)
        )

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q, k, v, log alpha (B, H, T, d), output gate (B, T, D)."""
        q, k, v, gate = self.qkvg(x).split(self.d_model, dim=-1)
        log_alpha = F.logsigmoid(self.decay(x)) / GATE_NORMALIZER  # <= 0
        q, k, v, g = (self._heads(z) for z in (q, k, v, log_alpha))
        return q * self.head_dim**-0.5, k, v, g, gate


def _make(cfg: GLAConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return GLAMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="gla",
        family="gated linear attention",
        version=1,
        papers=("Gated Linear Attention Transformers with Hardware-Efficient Training",),
        config_cls=GLAConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
