"""Mixture of depths: a learned per-token router decides which tokens the attention sublayer
processes, under a capacity; the others skip it through the residual stream. Routed outputs are
scaled by the router weight so the router learns. The paper routes the top capacity x T tokens
of the whole sequence, which is not causal (whether token t is routed depends on later tokens'
scores, so training leaks the future and decoding cannot reproduce it); MoD decodes with a
separate predictor trained to imitate top-k. Here the capacity holds on every prefix instead:
token t wants attention when sigmoid(router) > 0.5 and gets it while fewer than
floor(capacity (t + 1)) earlier tokens were routed (first come, first served), so at most
capacity x (t + 1) of the first t + 1 tokens are ever routed, one sequence's routing never
depends on later tokens or other sequences, and decoding routes exactly as the parallel form.
Skipped tokens are not attended to by later tokens. The fraction routed in the last forward is
reported by `stats()` (the active compute). This pure-PyTorch form still computes projections
for every token (it measures routing quality, not the compute saving) and its cache keeps every
token's keys plus the routing flags (preallocated, one slot written per decoded token)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import ConfigError, Variant, integer, register
from ._kv import KVCache
from .transformer import AttentionMixer, check_heads

__all__ = ["VARIANT", "ModConfig", "RoutedAttentionMixer", "capacity_route"]


@dataclass(frozen=True)
class ModConfig:
    n_heads: int = integer(4)  # head width = d_model / n_heads, even for RoPE
    capacity: float = 0.5  # most tokens routed through attention, as a fraction of every prefix

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)
        if not 0 < self.capacity <= 1:
            raise ConfigError(f"config key 'capacity' must be in (0, 1]; got {self.capacity}")


def capacity_route(want: Tensor, capacity: float) -> Tensor:
    """Tokens admitted first come, first served under a prefix budget: want (B, T) bool ->
    routed (B, T) bool, with routed_t = want_t and (routed before t) < floor(capacity (t + 1)).

    The count R_t = min(R_{t-1} + want_t, budget_t) unrolls to R = M + min(0, cummin(budget - M))
    with M = cumsum(want), so the rule runs in parallel; routed_t is where R steps up. Budgets
    are computed in float64 on the CPU, exactly as `step` computes them in Python.
    """
    t = want.shape[1]
    pos = torch.arange(1, t + 1, dtype=torch.float64)
    budget = torch.floor(capacity * pos).long().to(want.device)  # (T,)
    wanted = want.long().cumsum(1)  # (B, T)
    count = wanted + (budget - wanted).cummin(1).values.clamp(max=0)  # R, (B, T)
    return torch.diff(count, dim=1, prepend=count.new_zeros(count.shape[0], 1)) > 0


class RoutedAttentionMixer(AttentionMixer):
    """Causal attention over routed tokens only; state: a `KVCache` of "k", "v" (B, H, t, hd)
    and the routing flags "routed" (B, 1, t) of every token so far."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, capacity: float) -> None:
        super().__init__(d_model, n_heads, n_layers)
        self.kernel_path = "sdpa_routed"
        self.capacity = capacity
        self.router = nn.Linear(d_model, 1)
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)
        self.routed_fraction: Tensor | None = None  # of the last forward, detached

    def _weight(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.router(x).squeeze(-1))  # (B, T)

    def _parallel(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """forward's output, the keys and values (B, H, T, hd) and the routing (B, T)."""
        weight = self._weight(x)
        routed = capacity_route(weight > 0.5, self.capacity)  # (B, T)
        self.routed_fraction = routed.float().mean().detach()
        q, k, v = self._qkv(x, 0)  # (B, H, T, hd)
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        mask = (causal & routed[:, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)
        y = self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None]))
        return y * (weight * routed)[..., None], k, v, routed  # skipped tokens add nothing

    def forward(self, x: Tensor) -> Tensor:
        return self._parallel(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, KVCache]:
        """forward(x) and the cache of every token's keys, values and routing flag."""
        y, k, v, routed = self._parallel(x)
        return y, KVCache.from_tokens(k=k, v=v, routed=routed[:, None, :])

    def stats(self) -> dict[str, float]:
        """Fraction of the last forward's tokens routed through attention ({} before any)."""
        if self.routed_fraction is None:
            return {}
        return {"routed_fraction": self.routed_fraction.item()}

    def init_state(self, batch_size: int, *, device: torch.device,
                   dtype: torch.dtype) -> KVCache:
        empty = self._empty_kv(batch_size, device, dtype)
        routed = torch.zeros(batch_size, 1, 0, device=device, dtype=torch.bool)
        return KVCache.from_tokens(k=empty, v=empty, routed=routed)

    def step(self, x_t: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        t = state.pos  # position of this token
        weight = self._weight(x_t)  # (B, 1)
        budget = math.floor(self.capacity * (t + 1))
        routed_t = (weight > 0.5) & (state["routed"].sum(-1) < budget)  # (B, 1)
        q, k, v = self._qkv(x_t, t)
        state = state.append(k=k, v=v, routed=routed_t[:, :, None])  # (B, H, t+1, hd), (B, 1, t+1)
        mask = state["routed"].clone()
        mask[..., -1] = True  # a token always sees itself
        y = F.scaled_dot_product_attention(q, state["k"], state["v"], attn_mask=mask[:, :, None])
        return self._merge(y) * (weight * routed_t)[..., None], state

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model + seq_len


def _make(cfg: ModConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return RoutedAttentionMixer(d_model, cfg.n_heads, n_layers, cfg.capacity)


VARIANT = register(
    Variant(
        name="mod",
        family="mixture of depths",
        version=2,  # routing under a per-prefix capacity (version 1 had no capacity)
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
