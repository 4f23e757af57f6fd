"""Looped transformer (parameter sharing across depth): the stack of n_layers blocks of causal
RoPE attention and MLP runs n_loops times with the same weights, so depth and compute grow with
n_loops while parameters stay those of n_layers blocks; by default one block (n_layers = 1) is
applied four times. Weight sharing follows the Sliced Recursive Transformer and looped-transformer
analyses; n_loops is a backbone key, so any mixer can be looped. Every run of a block keeps its
own KV cache for decoding, so the state is n_loops * n_layers caches of 2 x D per token."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._common import Variant, integer, register
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "LoopedConfig"]


@dataclass(frozen=True)
class LoopedConfig:
    n_heads: int = integer(4)  # attention heads; head width d_model / n_heads, even for RoPE

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


def _make(cfg: LoopedConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return AttentionMixer(d_model, cfg.n_heads, n_layers)


VARIANT = register(
    Variant(
        name="looped",
        family="parameter sharing",
        version=1,
        papers=(
            "Sliced Recursive Transformer",
            "On the Expressive Power of a Variant of the Looped Transformer",
            "Universal Transformers",
        ),
        config_cls=LoopedConfig,
        make_mixer=_make,
        doc=__doc__,
        backbone_defaults={"n_layers": 1, "n_loops": 4},
    )
)
