"""Performer (FAVOR+): causal linear attention whose feature map is a positive random-feature
estimate of the softmax kernel, phi(x) = exp(W x - |x|^2 / 2) / sqrt(m) on x scaled by
d^(-1/4), so that E[phi(q) . phi(k)] = exp(q . k / sqrt(d)). The m x d matrix W has
orthogonal rows with Gaussian norms (orthogonal random features), drawn once at build from the
caller-seeded torch RNG and kept as a buffer, shared by the heads of a layer. Causal attention is
then a running sum, computed chunk by chunk with the linear-attention kernels (`impl`
"reference": token by token); decoding keeps an m x d matrix and an m-vector normaliser per head,
constant in context length."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from .linear_attention import LinearAttentionMixer
from .transformer import check_heads

__all__ = [
    "VARIANT",
    "PerformerConfig",
    "PerformerMixer",
    "favor_features",
    "orthogonal_gaussian",
]


@dataclass(frozen=True)
class PerformerConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads
    n_features: int = integer(32)  # m random features; state m * (d + 1) per head
    chunk_size: int = integer(64)  # time steps per chunk of the parallel form (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunked form; reference: the recurrence

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


def orthogonal_gaussian(m: int, d: int) -> Tensor:
    """(m, d) random matrix: rows orthogonal within each block of d, each row's norm drawn as a
    Gaussian vector's (chi with d degrees of freedom), from the global torch RNG."""
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d))
        # QR's sign convention biases Q (rows then have a nonzero mean, and the kernel estimate
        # drifts low); fixing diag(R) > 0 makes Q uniformly (Haar) distributed
        blocks.append((q * torch.diagonal(r).sign()).T)
    norms = torch.randn(m, d).norm(dim=1, keepdim=True)  # (m, 1)
    return torch.cat(blocks)[:m] * norms


def favor_features(x: Tensor, w: Tensor, *, stabilize: bool) -> Tensor:
    """Positive random features of the softmax kernel: x (B, H, T, d), w (m, d) -> (B, H, T, m).

    The exponent is at most |w_i|^2 / 2, so keys cannot overflow. `stabilize` (queries only)
    subtracts each token's largest exponent: a per-query factor that cancels between numerator
    and denominator, computed per token so forward and step agree and nothing leaks from later.
    """
    x = x * x.shape[-1] ** -0.25
    logits = x @ w.T - x.square().sum(-1, keepdim=True) / 2  # (B, H, T, m)
    if stabilize:
        logits = logits - logits.amax(-1, keepdim=True).detach()
    return torch.exp(logits) / math.sqrt(w.shape[0])


class PerformerMixer(LinearAttentionMixer):
    """Multi-head FAVOR+ attention: linear attention whose feature map is positive random
    features; state {"kv": (B, H, m, d), "k_sum": (B, H, m)}."""

    def __init__(
        self, d_model: int, n_heads: int, n_layers: int, n_features: int, chunk: int, impl: str
    ) -> None:
        super().__init__(d_model, n_heads, chunk, impl)
        self.n_features = self.feature_dim = n_features
        self.register_buffer("features", orthogonal_gaussian(n_features, self.head_dim))
        # GPT-2 init, as the transformer baseline, output projection scaled by depth
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(2 * n_layers))

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        w = self.features.to(x.dtype)
        q = favor_features(q, w, stabilize=True)  # (B, H, T, m)
        return q, favor_features(k, w, stabilize=False), v


def _make(cfg: PerformerConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return PerformerMixer(d_model, cfg.n_heads, n_layers, cfg.n_features, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="performer",
        family="kernel attention",
        version=1,
        papers=(
            "Rethinking Attention with Performers",
            "Long Range Arena: A Benchmark for Efficient Transformers",
            "A Practical Survey on Faster and Lighter Transformers",
        ),
        config_cls=PerformerConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
