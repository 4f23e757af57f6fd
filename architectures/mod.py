"""Mixture of depths: a learned per-token router decides which tokens the attention sublayer
processes; the others skip it through the residual stream. Routed outputs are scaled by the
router weight so the router learns. The paper's top-capacity routing ranks tokens over the whole
sequence, which is not causal; here each token is routed on its own score (sigmoid > 0.5), the
causal rule MoD itself uses when decoding, so one sequence's routing never depends on later
tokens or on other sequences. Skipped tokens are not attended to by later tokens. This
pure-PyTorch form still computes projections for every token (it measures routing quality,
not the compute saving) and its cache keeps every token's keys plus the routing flags."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import Variant, integer, register
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "ModConfig", "RoutedAttentionMixer"]


@dataclass(frozen=True)
class ModConfig:
    n_heads: int = integer(4)  # head width = d_model / n_heads, even for RoPE

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


class RoutedAttentionMixer(AttentionMixer):
    """Causal attention over routed tokens only; state {"k", "v"} (B, H, t, hd), "routed" (B, t)."""

    kernel_path = "sdpa_routed"

    def __init__(self, d_model: int, n_heads: int, n_layers: int) -> None:
        super().__init__(d_model, n_heads, n_layers)
        self.router = nn.Linear(d_model, 1)
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)

    def _route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        weight = torch.sigmoid(self.router(x).squeeze(-1))  # (B, T)
        return weight, weight > 0.5

    def forward(self, x: Tensor) -> Tensor:
        weight, routed = self._route(x)
        q, k, v = self._qkv(x, 0)  # (B, H, T, hd)
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        mask = (causal & routed[:, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)
        y = self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None]))
        return y * (weight * routed)[..., None]  # skipped tokens add nothing

    def init_state(self, batch_size: int, *, device: torch.device,
                   dtype: torch.dtype) -> dict[str, Tensor]:
        state = super().init_state(batch_size, device=device, dtype=dtype)
        return {**state, "routed": torch.zeros(batch_size, 0, device=device, dtype=torch.bool)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        weight, routed_t = self._route(x_t)  # (B, 1)
        q, k, v = self._qkv(x_t, state["k"].shape[2])
        k = torch.cat([state["k"], k], dim=2)  # (B, H, t+1, hd)
        v = torch.cat([state["v"], v], dim=2)
        routed = torch.cat([state["routed"], routed_t], dim=1)  # (B, t+1)
        mask = routed.clone()
        mask[:, -1] = True  # a token always sees itself
        y = self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None]))
        return y * (weight * routed_t)[..., None], {"k": k, "v": v, "routed": routed}

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model + seq_len


def _make(cfg: ModConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return RoutedAttentionMixer(d_model, cfg.n_heads, n_layers)


VARIANT = register(
    Variant(
        name="mod",
        family="mixture of depths",
        version=1,
        papers=(
            "Mixture-of-Depths: Dynamically allocating compute in transformer-based language "
            "models",
            "p-MoD: Building Mixture-of-Depths MLLMs via Progressive Ratio Decay",
            "VideoLLM-MoD: Efficient Video Language Model with Mixture-of-Depths Vision "
            "Computation",
        ),
        config_cls=ModConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
