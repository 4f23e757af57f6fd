"""Local attention with a few global layers (MASFormer): causal softmax attention over the
whole context in one layer of every `global_every`, and sliding-window attention over the last
`window` tokens in all others. Most layers keep a bounded cache of `window` tokens; only the
global layers keep the full, linearly growing KV cache. Both layer kinds are the
`sliding_window` and `transformer` mixers unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ._common import IMPLS, Variant, choice, integer, register
from .sliding_window import SlidingWindowMixer, window_covers
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "MasformerConfig"]


@dataclass(frozen=True)
class MasformerConfig:
    global_every: int = integer(2)  # layer i is global when i % global_every == global_every - 1
    n_heads: int = integer(4)  # head width = d_model / n_heads, even for RoPE
    window: int = integer(64)  # tokens a local layer's query sees, itself included
    impl: str = choice("fast", IMPLS)  # local layers: blocked (fast) or T x T masked (reference)

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        """All layers global, or a window covering the sequence: the transformer; no global
        layer in the stack: sliding_window."""
        if self.global_every == 1:
            return "global_every 1 (every layer global): computes the same function as transformer"
        covers = window_covers(self.window, seq_len)
        if covers is not None:
            return covers
        if self.global_every > backbone.n_layers:
            return (f"global_every {self.global_every} > n_layers {backbone.n_layers} (no global "
                    "layer): computes the same function as sliding_window")
        return None


def _make(cfg: MasformerConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    if layer_idx % cfg.global_every == cfg.global_every - 1:
        return AttentionMixer(d_model, cfg.n_heads, n_layers)
    return SlidingWindowMixer(d_model, cfg.n_heads, n_layers, cfg.window, cfg.impl)


VARIANT = register(
    Variant(
        name="masformer",
        family="local + few global attention",
        version=2,  # global layers decode from a static KV cache (kernel path names it)
        papers=(
            "Efficient Long-Range Transformers: You Need to Attend More, but Not Necessarily at "
            "Every Layer",
        ),
        config_cls=MasformerConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
