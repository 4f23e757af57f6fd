"""Attention + SSM hybrid: a stack of Mamba-1 layers in which every attn_every-th layer is causal
softmax attention with RoPE instead (layer i is attention when i % attn_every == attn_every - 1),
the recipe of Mamba-2-Hybrid-style models where a few attention layers restore in-context recall
that a pure SSM lacks. The layers are the `mamba` and `transformer` mixers unchanged; decoding
holds a constant SSM state plus a KV cache for the attention layers only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ._common import IMPLS, Variant, choice, integer, register
from .mamba import MambaMixer
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "HybridConfig"]


@dataclass(frozen=True)
class HybridConfig:
    attn_every: int = integer(
        2
    )  # one attention layer per attn_every layers (the last of each group)
    n_heads: int = integer(4)  # attention heads
    d_state: int = integer(16)  # Mamba state size N
    d_conv: int = integer(4)  # Mamba conv width
    expand: int = integer(2)  # Mamba D_inner = expand * d_model
    chunk_size: int = integer(32)  # most steps per Mamba scan chunk (speed only)
    impl: str = choice("fast", IMPLS)  # Mamba layers' scan: chunked (fast) or sequential

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        """Every layer attention: the transformer; none: mamba with the same SSM keys."""
        if self.attn_every == 1:
            return "attn_every 1 (every layer attention): computes the same function as transformer"
        if self.attn_every > backbone.n_layers:
            return (f"attn_every {self.attn_every} > n_layers {backbone.n_layers} (no attention "
                    f"layer): computes the same function as mamba with d_state {self.d_state}, "
                    f"d_conv {self.d_conv}, expand {self.expand}")
        return None


def _make(cfg: HybridConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    if layer_idx % cfg.attn_every == cfg.attn_every - 1:
        return AttentionMixer(d_model, cfg.n_heads, n_layers)
    return MambaMixer(
        d_model, n_layers, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand, dt_rank=0,
        chunk_size=cfg.chunk_size, impl=cfg.impl,
    )  # fmt: skip


VARIANT = register(
    Variant(
        name="hybrid",
        family="attention + SSM hybrid",
        version=2,  # attention layers decode from a static KV cache (kernel path names it)
        papers=(
            "An Empirical Study of Mamba-based Language Models",
            "Hungry Hungry Hippos: Towards Language Modeling with State Space Models",
        ),
        config_cls=HybridConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
