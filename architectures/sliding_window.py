"""Sliding-window attention: causal multi-head softmax attention with RoPE in which each token
sees only the last `window` tokens (itself included), the local attention of Longformer and of
the sparse/local family. The parallel form is blocked, so it is linear in sequence length:
queries are cut into blocks of `window` tokens and each block attends to its own block and the
previous one under a band mask; a reference runs full attention with a T x T band mask. Decoding
keeps a rolling key/value cache of at most `window` tokens: state 2 x min(T, window) x D per
layer, flat once the window is full. The cache is preallocated (2 x window slots at most): a step
writes one slot and the live window moves into a fresh buffer once every `window` steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._kv import KVCache
from .transformer import AttentionMixer, check_heads

__all__ = [
    "VARIANT",
    "SlidingWindowConfig",
    "SlidingWindowMixer",
    "sliding_window_blocked",
    "sliding_window_ref",
    "window_covers",
]


@dataclass(frozen=True)
class SlidingWindowConfig:
    n_heads: int = integer(4)  # head width = d_model / n_heads, must be even for RoPE
    window: int = integer(64)  # tokens each query sees, itself included
    impl: str = choice("fast", IMPLS)  # fast: blocked band attention; reference: T x T mask

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)

    def same_function(self, seq_len: int, backbone: Any) -> str | None:
        """A window that covers the whole sequence is full causal attention."""
        return window_covers(self.window, seq_len)


def window_covers(window: int, seq_len: int) -> str | None:
    """The same-function reason when every query's window reaches back to the first token."""
    if window >= seq_len:
        return (f"window {window} >= sequence length {seq_len}: computes the same function as "
                "transformer")
    return None


def band_mask(t: int, window: int, device: torch.device | None = None) -> Tensor:
    """(T, T) bool, True where query t may attend key s: t - window < s <= t."""
    pos = torch.arange(t, device=device)
    offset = pos[:, None] - pos[None, :]  # t - s
    return (offset >= 0) & (offset < window)


def sliding_window_ref(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Reference: full attention under a T x T band mask. q, k, v (B, H, T, hd) -> (B, H, T, hd)."""
    mask = band_mask(q.shape[2], window, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _block_mask(n: int, window: int, device: torch.device) -> Tensor:
    """(n, w, 2w) bool: query i of a block sees key j of [previous block, own block] iff
    i < j <= i + w; block 0 has no previous block."""
    i = torch.arange(window, device=device)[:, None]
    j = torch.arange(2 * window, device=device)[None, :]
    mask = ((j > i) & (j <= i + window)).expand(n, window, 2 * window).clone()
    mask[0, :, :window] = False
    return mask


def _with_previous_block(z: Tensor) -> Tensor:
    """(B', n, w, hd) -> (B', n, 2w, hd): each block preceded by the one before (zeros for 0)."""
    previous = F.pad(z, (0, 0, 0, 0, 1, 0))[:, :-1]
    return torch.cat([previous, z], dim=2)


def sliding_window_blocked(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """Same result as `sliding_window_ref` in O(T w) time and memory.

    q, k, v (B, H, T, hd) -> (B, H, T, hd). Up to `window` tokens the band is the causal mask, so
    plain causal attention runs. Otherwise T is zero-padded to blocks of w: padded keys lie after
    every real query and the mask never reaches them; padded queries are dropped.
    """
    b, h, t, hd = q.shape
    if t <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    pad = -t % window
    n = (t + pad) // window
    q, k, v = (F.pad(z, (0, 0, 0, pad)).reshape(b * h, n, window, hd) for z in (q, k, v))
    k, v = _with_previous_block(k), _with_previous_block(v)  # (B*H, n, 2w, hd)
    mask = _block_mask(n, window, q.device)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*H, n, w, hd)
    return y.reshape(b, h, n * window, hd)[:, :, :t]


class SlidingWindowMixer(AttentionMixer):
    """The transformer's attention (projections, RoPE, init) with a window on the keys.

    State: a `KVCache` with a window, whose "k", "v" are the rotated keys and values of the last
    <= window tokens, (B, H, <= window, hd), and `.pos` the position of the next token (RoPE needs
    it once the cache stops growing). `impl` "fast" runs the blocked form (kernel path
    "blocked"), "reference" full attention under a T x T band mask ("masked").
    """

    def __init__(self, d_model: int, n_heads: int, n_layers: int, window: int, impl: str):
        super().__init__(d_model, n_heads, n_layers)
        self.window, self.kernel_path = window, "blocked" if impl == "fast" else "masked"

    def _attend(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self._qkv(x, 0)  # (B, H, T, hd)
        attend = sliding_window_blocked if self.kernel_path == "blocked" else sliding_window_ref
        return self._merge(attend(q, k, v, self.window)), k, v

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, KVCache]:
        """forward(x) and a cache of the last min(T, window) keys and values, pos T."""
        y, k, v = self._attend(x)
        return y, KVCache.from_tokens(k=k, v=v, window=self.window)

    def init_state(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> KVCache:
        empty = self._empty_kv(batch_size, device, dtype)
        return KVCache.from_tokens(k=empty, v=empty, window=self.window)

    def step(self, x_t: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        q, k, v = self._qkv(x_t, state.pos)  # (B, H, 1, hd)
        state = state.append(k=k, v=v)  # the last <= w tokens, this one included
        y = F.scaled_dot_product_attention(q, state["k"], state["v"])
        return self._merge(y), state

    def state_size(self, seq_len: int) -> int:
        return 2 * min(seq_len, self.window) * self.d_model


def _make(cfg: SlidingWindowConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return SlidingWindowMixer(d_model, cfg.n_heads, n_layers, cfg.window, cfg.impl)


VARIANT = register(
    Variant(
        name="sliding_window",
        family="local attention",
        version=1,
        papers=(
            "Efficient Long-Range Transformers: You Need to Attend More, "
            "but Not Necessarily at Every Layer",
            "Longformer: The Long-Document Transformer",
        ),
        config_cls=SlidingWindowConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
