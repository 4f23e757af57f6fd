"""Softmax attention baseline: causal multi-head self-attention with rotary position embeddings
(RoPE) in a Pre-LN block. The parallel form runs `F.scaled_dot_product_attention` with a causal
mask; decoding keeps a key/value cache that grows by 2 x D elements per token per layer, which is
what every recurrent variant is compared against. `kv_cache` picks how that cache is held:
`static` (default) preallocates it and writes one slot per token, growing geometrically when full;
`concat` concatenates the whole cache into a new tensor every step (the naive form, kept to
compare against). The kernel path names the choice."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import ConfigError, Variant, choice, integer, register
from ._kv import KVCache

__all__ = ["KV_CACHES", "VARIANT", "AttentionMixer", "TransformerConfig", "check_heads"]

KV_CACHES = ("static", "concat")  # how a decoding KV cache is held, see `AttentionMixer`


def check_heads(d_model: int, n_heads: int) -> None:
    """RoPE needs the head width d_model / n_heads to be a whole, even number."""
    if d_model % n_heads or (d_model // n_heads) % 2:
        raise ConfigError(
            f"config key 'n_heads' must split d_model={d_model} into heads of even width; "
            f"got {n_heads}"
        )


@dataclass(frozen=True)
class TransformerConfig:
    n_heads: int = integer(4)  # head width = d_model / n_heads, must be even for RoPE
    # decoding KV cache: preallocated, one slot written per token; or concatenated every step
    kv_cache: str = choice("static", KV_CACHES)

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        """The backbone axes can turn the transformer into moe or looped."""
        if backbone.n_experts:
            return (f"n_experts {backbone.n_experts} on the transformer: computes the same "
                    "function as moe")
        if backbone.n_layers == 1 and backbone.n_loops > 1:
            return (f"one block looped {backbone.n_loops} times: computes the same function as "
                    "looped")
        return None


def _rope(x: Tensor, inv_freq: Tensor, start: int) -> Tensor:
    """Rotate (B, H, T, hd) by the angles of positions start .. start+T-1 (rotate-half form)."""
    t = torch.arange(start, start + x.shape[2], device=x.device, dtype=inv_freq.dtype)
    angles = torch.outer(t, inv_freq)  # (T, hd/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class AttentionMixer(nn.Module):
    """Causal multi-head attention with RoPE; its decoding state is the KV cache.

    `kv_cache="static"`: a `KVCache` of keys (rotated) and values, (B, H, t, hd) filled views of
    preallocated buffers; a step writes one slot. `"concat"`: {"k", "v"} plain (B, H, t, hd)
    tensors, concatenated into new ones every step. `kernel_path` is "sdpa+<kv_cache>_cache".
    """

    def __init__(self, d_model: int, n_heads: int, n_layers: int, kv_cache: str = "static") -> None:
        super().__init__()
        check_heads(d_model, n_heads)
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}; got {kv_cache!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.kv_cache = kv_cache
        self.kernel_path = f"sdpa+{kv_cache}_cache"
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        inv_freq = 10000.0 ** (
            -torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        # GPT-2 init, output projection scaled by depth
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(2 * n_layers))

    def _qkv(self, x: Tensor, start: int) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return _rope(q, self.inv_freq, start), _rope(k, self.inv_freq, start), v  # (B, H, T, hd)

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.d_model))  # (B, H, T, hd) -> (B, T, D)

    def _empty_kv(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        return torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x, 0)
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def prefill(self, x: Tensor) -> tuple[Tensor, Any]:
        """forward(x) and the KV cache of x's T tokens: the keys and values forward computed."""
        q, k, v = self._qkv(x, 0)
        y = self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        if self.kv_cache == "concat":  # own copies: v is a view of the whole qkv projection
            return y, {"k": k.contiguous(), "v": v.contiguous()}
        return y, KVCache.from_tokens(k=k, v=v)

    def init_state(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> Any:
        empty = self._empty_kv(batch_size, device, dtype)
        if self.kv_cache == "concat":
            return {"k": empty, "v": empty.clone()}
        return KVCache.from_tokens(k=empty, v=empty)

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        # the position of the new token is the cache length
        q, k, v = self._qkv(x_t, state["k"].shape[2])
        if self.kv_cache == "concat":
            k = torch.cat([state["k"], k], dim=2)  # (B, H, t+1, hd)
            v = torch.cat([state["v"], v], dim=2)
            return self._merge(F.scaled_dot_product_attention(q, k, v)), {"k": k, "v": v}
        state = state.append(k=k, v=v)
        return self._merge(F.scaled_dot_product_attention(q, state["k"], state["v"])), state

    def state_size(self, seq_len: int) -> int:
        return 2 * seq_len * self.d_model


def _make(cfg: TransformerConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return AttentionMixer(d_model, cfg.n_heads, n_layers, cfg.kv_cache)


VARIANT = register(
    Variant(
        name="transformer",
        family="softmax attention",
        version=2,  # kv_cache key, static cache by default (version 1 concatenated every step)
        papers=(
            "Long Range Arena: A Benchmark for Efficient Transformers",
            "An Empirical Study of Mamba-based Language Models",
            "Attention Is All You Need",
        ),
        config_cls=TransformerConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
