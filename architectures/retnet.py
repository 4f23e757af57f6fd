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
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import Variant, choice, integer, register
from ._decay_attention import (
    HeadNorm,
    check_head_split,
    decay_attention_chunked,
    decay_attention_ref,
    decay_attention_step,
)

__all__ = ["VARIANT", "RetNetConfig", "RetentionMixer"]


@dataclass(frozen=True)
class RetNetConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d x d per head
    chunk_size: int = integer(64)  # time steps per chunk of the chunkwise form (speed only)
    scan: str = choice("chunked", ("chunked", "reference"))  # chunkwise form or the recurrence

    def check(self, d_model: int) -> None:
        check_head_split(d_model, self.n_heads)


def retention_decays(n_heads: int) -> Tensor:
    """log gamma_h for gamma_h = 1 - 2^(-5-h), via log1p so gamma near 1 keeps its precision."""
    return torch.tensor([math.log1p(-(2.0 ** (-5 - h))) for h in range(n_heads)])


class RetentionMixer(nn.Module):
    """Multi-scale retention with GroupNorm and swish gate; state (B, H, d, d)."""

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, scan: str) -> None:
        super().__init__()
        check_head_split(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.chunk_size, self.kernel_path = chunk_size, scan
        self.qkvg = nn.Linear(d_model, 4 * d_model, bias=False)
        self.norm = HeadNorm(n_heads, self.head_dim)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.register_buffer("log_gamma", retention_decays(n_heads), persistent=False)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q, k, v (B, H, T, d), log decays (B, H, T, 1), gate (B, T, D)."""
        b, t, _ = x.shape
        q, k, v, gate = self.qkvg(x).split(self.d_model, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        g = self.log_gamma.to(x.dtype)[:, None, None].expand(b, self.n_heads, t, 1)
        return q, k * self.head_dim**-0.5, v, g, gate

    def _output(self, o: Tensor, gate: Tensor) -> Tensor:
        """o (B, H, T, d), gate (B, T, D) -> (B, T, D)."""
        return self.out(F.silu(gate) * self.norm(o.transpose(1, 2)))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v, g, gate = self._project(x)
        if self.kernel_path == "chunked":
            o, _ = decay_attention_chunked(q, k, v, g, self.chunk_size)
        else:
            o, _ = decay_attention_ref(q, k, v, g)
        return self._output(o, gate)

    def init_state(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
        shape = (batch_size, self.n_heads, self.head_dim, self.head_dim)
        return torch.zeros(shape, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v, g, gate = self._project(x_t)
        o, state = decay_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], state)
        return self._output(o[:, :, None], gate), state  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.head_dim * self.head_dim


def _make(cfg: RetNetConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return RetentionMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.scan)


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
