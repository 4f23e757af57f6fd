"""Looped transformer (parameter sharing across depth): one block of causal RoPE attention and
MLP is applied n_loops times (default 4) with the same weights, so depth and compute grow with
n_loops while the parameters stay those of one block. n_layers is fixed at 1: with more, the
model would be a stack of distinct blocks looped, another architecture (any variant can loop a
stack through the backbone key n_loops, e.g. the transformer with n_layers 2 and n_loops 4).
Weight sharing follows the Sliced Recursive Transformer and looped-transformer analyses. Every
run of the block keeps its own KV cache for decoding, so the state is n_loops caches of 2 x D
per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ._common import Variant, integer, register
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "LoopedConfig"]


@dataclass(frozen=True)
class LoopedConfig:
    n_heads: int = integer(4)  # attention heads; head width d_model / n_heads, even for RoPE

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        if backbone.n_loops == 1:
            return "n_loops 1: computes the same function as transformer with n_layers 1"
        return None


def _make(cfg: LoopedConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return AttentionMixer(d_model, cfg.n_heads, n_layers)


VARIANT = register(
    Variant(
        name="looped",
        family="parameter sharing",
        # 2: n_layers fixed at 1 (version 1 also ran stacks of distinct blocks); 3: decodes from
        # a static KV cache (kernel path names it)
        version=3,
        papers=(
            "Sliced Recursive Transformer",
            "On the Expressive Power of a Variant of the Looped Transformer",
            "Universal Transformers",
        ),
        config_cls=LoopedConfig,
        make_mixer=_make,
        doc=__doc__,
        backbone_defaults={"n_loops": 4},
        backbone_fixed={"n_layers": 1},
        fixed_reason="looped is one shared block applied n_loops times; set n_loops for depth",
    )
)
