"""Mixture of experts: the transformer's causal RoPE attention with each dense MLP replaced by
n_experts routed expert MLPs (default 4, each the dense MLP's shape) of which every token uses its
top_k (default 2) by a softmax router, as in Switch Transformers (top-1) and GShard (top-2); the
MoE-Mamba and BlackMamba papers put the same layer after SSM mixers, which the backbone keys
n_experts and top_k allow for any variant. Routing is per token with no capacity limit, so nothing
is dropped and decoding equals the parallel form; the Switch load-balancing loss of the last
forward is `model.aux_loss`. Total parameters grow with n_experts, active ones with top_k."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ._common import Variant, integer, register
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "MoEConfig"]


@dataclass(frozen=True)
class MoEConfig:
    n_heads: int = integer(4)  # attention heads; head width d_model / n_heads, even for RoPE

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        """No experts is the dense transformer; one expert gets every token with weight 1."""
        if backbone.n_experts <= 1:
            return (f"n_experts {backbone.n_experts} (a dense MLP): computes the same function "
                    "as transformer")
        return None


def _make(cfg: MoEConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return AttentionMixer(d_model, cfg.n_heads, n_layers)


VARIANT = register(
    Variant(
        name="moe",
        family="mixture of experts",
        version=2,  # decodes from a static KV cache (kernel path names it)
        papers=(
            "MoE-Mamba: Efficient Selective State Space Models with Mixture of Experts",
            "BlackMamba: Mixture of Experts for State-Space Models",
            "Switch Transformers: Scaling to Trillion Parameter Models with Simple and Efficient "
            "Sparsity",
        ),
        config_cls=MoEConfig,
        make_mixer=_make,
        doc=__doc__,
        backbone_defaults={"n_experts": 4, "top_k": 2},
    )
)
