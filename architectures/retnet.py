"""RetNet multi-scale retention: head h (0 .. n_heads-1) has a fixed decay gamma_h = 1 - 2^(-5-h)
on a linear-attention state, S_t = gamma_h S_{t-1} + k_t v_t^T and o_t = q_t S_t, so each head
attends with exponentially fading weight gamma^(t-s) over a different time scale. Head outputs pass
a per-head GroupNorm and a swish gate from the input before the output projection. Decoding keeps
one d_k x d_v state per head: constant in context length. The parallel form is the chunkwise one
(an L x L decay-masked product inside each chunk, the state carried across chunks); the
recurrent form is the sequential reference. Simplifications: no xPos rotation (the decay alone
carries position), and the parallel form's score normalisations are dropped, since the per-head
GroupNorm that follows makes the output invariant to them (up to its eps)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._decay_attention import (
    DecayAttentionMixer,
    check_head_split,
)

__all__ = ["VARIANT", "RetNetConfig", "RetentionMixer"]


@dataclass(frozen=True)
class RetNetConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d x d per head
    chunk_size: int = integer(64)  # time steps per chunk of the chunkwise form (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunked form; reference: the recurrence

    def check(self, d_model: int) -> None:
        check_head_split(d_model, self.n_heads)


def retention_decays(n_heads: int) -> Tensor:
    """log gamma_h for gamma_h = 1 - 2^(-5-h), via log1p so gamma near 1 keeps its precision."""
    return torch.tensor([math.log1p(-(2.0 ** (-5 - h))) for h in range(n_heads)])


class RetentionMixer(DecayAttentionMixer):
    """Multi-scale retention with GroupNorm and swish gate; state {"kv": (B, H, d, d)}."""

    no_weight_decay = ()  # the decays gamma_h are fixed buffers, not parameters

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, impl: str) -> None:
        super().__init__(d_model, n_heads, chunk_size, impl)
        self.register_buffer("log_gamma", retention_decays(n_heads), persistent=False)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q, k, v (B, H, T, d), log decays (B, H, T, 1), gate (B, T, D)."""
        b, t, _ = x.shape
        q, k, v, gate = self.qkvg(x).split(self.d_model, dim=-1)
        q, k, v = (self._heads(z) for z in (q, k, v))
        g = self.log_gamma.to(x.dtype)[:, None, None].expand(b, self.n_heads, t, 1)
        return q, k * self.head_dim**-0.5, v, g, gate


def _make(cfg: RetNetConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return RetentionMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="retnet",
        family="retention",
        version=1,
        papers=(
            "RMT: Retentive Networks Meet Vision Transformers",
            "Retentive Network: A Successor to Transformer for Large Language Models",
        ),
        config_cls=RetNetConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
