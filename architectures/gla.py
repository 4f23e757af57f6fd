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

__all__ = ["VARIANT", "GLAConfig", "GLAMixer"]

GATE_RANK = 16  # rank of the decay projection, as in the GLA paper
GATE_NORMALIZER = 16  # alpha = sigmoid(.)^(1 / GATE_NORMALIZER)


@dataclass(frozen=True)
class GLAConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d x d per head
    # time steps per chunk (speed only); the intra-chunk tensor is L x L x d_k per chunk, so small
    # chunks win: on CPU, L = 8 ran 2x faster than 16 and 4x faster than 64 at T = 16K, d_model 64
    chunk_size: int = integer(8)
    scan: str = choice("chunked", ("chunked", "reference"))  # chunked form or the recurrence

    def check(self, d_model: int) -> None:
        check_head_split(d_model, self.n_heads)


class GLAMixer(nn.Module):
    """GLA layer after fla's `GatedLinearAttention`, key width = value width; state (B, H, d, d)."""

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, scan: str) -> None:
        super().__init__()
        check_head_split(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.chunk_size, self.kernel_path = chunk_size, scan
        self.qkvg = nn.Linear(d_model, 4 * d_model, bias=False)
        self.decay = nn.Sequential(
            nn.Linear(d_model, GATE_RANK, bias=False), nn.Linear(GATE_RANK, d_model)
        )
        self.norm = HeadNorm(n_heads, self.head_dim)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, z: Tensor) -> Tensor:
        b, t, _ = z.shape
        return z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q, k, v, log alpha (B, H, T, d), output gate (B, T, D)."""
        q, k, v, gate = self.qkvg(x).split(self.d_model, dim=-1)
        log_alpha = F.logsigmoid(self.decay(x)) / GATE_NORMALIZER  # <= 0
        q, k, v, g = (self._heads(z) for z in (q, k, v, log_alpha))
        return q * self.head_dim**-0.5, k, v, g, gate

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


def _make(cfg: GLAConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return GLAMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.scan)


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
