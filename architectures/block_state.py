"""Block-State Transformer layer: a Mamba-1 SSM sublayer runs over the whole sequence and turns
each position into a context state; causal softmax attention with RoPE runs within blocks of
block_len tokens, where every query sees the earlier keys of its own block plus one key and value
projected from the SSM output at its own position (one softmax over both). The SSM output is also
added to the attention output, so the path across blocks is never gated off by the softmax (in a
small cross-block copy test this trained more reliably than either combination alone). Cost is
linear in T (T x block_len scores); decoding holds the SSM state plus the KV cache of the current
block only, at most block_len tokens (preallocated: block_len slots, fresh ones per block). The
reference form (`impl` "reference") runs the SSM's sequential scan and a full-mask attention
beside the chunked scan and block-wise attention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._kv import KVCache
from .mamba import MambaMixer
from .transformer import _rope, check_heads

__all__ = [
    "VARIANT",
    "BlockStateConfig",
    "BlockStateMixer",
    "block_attention",
    "block_attention_ref",
]


@dataclass(frozen=True)
class BlockStateConfig:
    block_len: int = integer(32)  # L, tokens per attention block
    n_heads: int = integer(4)  # attention heads; head width d_model / n_heads, even for RoPE
    d_state: int = integer(16)  # SSM state size N per channel
    d_conv: int = integer(4)  # SSM causal conv width
    expand: int = integer(2)  # SSM inner width = expand * d_model
    chunk_size: int = integer(32)  # most steps per SSM scan chunk (speed only)
    # fast: chunked SSM scan + block-wise attention; reference: sequential scan + full-mask
    # attention (kernel path "chunked+blockwise" or "sequential+masked")
    impl: str = choice("fast", IMPLS)

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


def _mix(scores: Tensor, ctx: Tensor, v: Tensor, vc: Tensor) -> Tensor:
    """One softmax over [scores (.., Q, K), ctx (.., Q, 1)]: weights @ v (.., K, hd) + w_c vc."""
    p = torch.cat([scores, ctx], dim=-1).softmax(-1)
    return p[..., :-1] @ v + p[..., -1:] * vc


def block_attention(
    q: Tensor, k: Tensor, v: Tensor, kc: Tensor, vc: Tensor, block_len: int, inv_freq: Tensor
) -> Tensor:
    """Block-wise causal attention plus a per-query context key, all unrotated (B, H, T, hd).

    The sequence is cut into blocks of L = min(block_len, T) (the last one padded at the end,
    which causal masking keeps from earlier queries); RoPE uses positions inside the block,
    which gives the same scores as absolute positions since only offsets within a block matter.
    The context key sits at the query's own position, so RoPE cancels in q . kc.
    """
    b, h, t, hd = q.shape
    size = min(block_len, t)
    n = -(-t // size)
    pad = (0, 0, 0, n * size - t)
    scale = 1.0 / math.sqrt(hd)

    def blocks(z: Tensor) -> Tensor:  # (B, H, T, hd) -> (B, H * n, L, hd)
        return F.pad(z, pad).reshape(b, h * n, size, hd)

    qb = blocks(q)
    qr, kr = _rope(qb, inv_freq, 0), _rope(blocks(k), inv_freq, 0)
    scores = (qr @ kr.transpose(-1, -2)) * scale  # (B, H * n, L, L)
    future = torch.ones(size, size, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    ctx = (qb * blocks(kc)).sum(-1, keepdim=True) * scale  # (B, H * n, L, 1)
    y = _mix(scores, ctx, blocks(v), blocks(vc))
    return y.view(b, h, n * size, hd)[:, :, :t]


def block_attention_ref(
    q: Tensor, k: Tensor, v: Tensor, kc: Tensor, vc: Tensor, block_len: int, inv_freq: Tensor
) -> Tensor:
    """Same as `block_attention` with a full (T, T) mask, absolute RoPE and a rotated kc."""
    t, scale = q.shape[2], 1.0 / math.sqrt(q.shape[3])
    qr, kr, kcr = (_rope(z, inv_freq, 0) for z in (q, k, kc))
    pos = torch.arange(t, device=q.device)
    allowed = (pos[:, None] >= pos) & (pos[:, None] // block_len == pos // block_len)
    scores = (qr @ kr.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    return _mix(scores, (qr * kcr).sum(-1, keepdim=True) * scale, v, vc)


class BlockStateMixer(nn.Module):
    """SSM context + block-wise attention; state: one `KVCache` whose "k" (rotated by position
    inside the block), "v" are (B, H, t, hd), t = tokens of the current block so far
    (< block_len) = its `pos`, with the Mamba state's "conv" and "ssm" as extra items."""

    def __init__(self, d_model: int, n_layers: int, cfg: BlockStateConfig) -> None:
        super().__init__()
        check_heads(d_model, cfg.n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, cfg.n_heads, d_model // cfg.n_heads
        self.block_len, self.blockwise = cfg.block_len, cfg.impl == "fast"
        self.ssm = MambaMixer(
            d_model, n_layers, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
            dt_rank=0, chunk_size=cfg.chunk_size, impl=cfg.impl,
        )  # fmt: skip
        attention = "blockwise" if self.blockwise else "masked"
        self.kernel_path = f"{self.ssm.kernel_path}+{attention}"
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.ctx = nn.Linear(d_model, 2 * d_model, bias=False)  # SSM output -> context key, value
        self.out = nn.Linear(d_model, d_model, bias=False)
        inv_freq = 10000.0 ** (
            -torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        nn.init.normal_(self.qkv.weight, std=0.02)
        nn.init.normal_(self.ctx.weight, std=0.02)
        nn.init.normal_(self.out.weight, std=0.02 / math.sqrt(2 * n_layers))

    def _heads(self, z: Tensor, parts: int) -> tuple[Tensor, ...]:
        b, t, _ = z.shape  # (B, T, parts * D) -> parts x (B, H, T, hd)
        return z.view(b, t, parts, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.d_model))  # (B, H, T, hd) -> (B, T, D)

    def _attend(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The output for input x and SSM output u (B, T, D); keys and values (B, H, T, hd)."""
        q, k, v = self._heads(self.qkv(x), 3)
        kc, vc = self._heads(self.ctx(u), 2)  # context from the SSM, (B, H, T, hd)
        attend = block_attention if self.blockwise else block_attention_ref
        return self._merge(attend(q, k, v, kc, vc, self.block_len, self.inv_freq)) + u, k, v

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x, self.ssm(x))[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, KVCache]:
        """forward(x) and the state: the SSM's prefill state plus the keys (rotated by their
        place in the block) and values of the T % block_len tokens of the unfinished block."""
        u, ssm = self.ssm.prefill(x)  # (B, T, D)
        y, k, v = self._attend(x, u)
        start = x.shape[1] - x.shape[1] % self.block_len  # first token of the current block
        k, v = k[:, :, start:], v[:, :, start:]
        cache = KVCache.from_tokens(k=_rope(k, self.inv_freq, 0), v=v, capacity=self.block_len)
        return y, cache.with_extra(**ssm)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> KVCache:
        empty = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        ssm = self.ssm.init_state(batch_size, device=device, dtype=dtype)
        return KVCache.from_tokens(k=empty, v=empty, capacity=self.block_len).with_extra(**ssm)

    def step(self, x_t: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        u, ssm = self.ssm.step(x_t, {key: state[key] for key in ("conv", "ssm")})  # (B, 1, D)
        cache = state
        pos = cache.pos  # place of this token inside its block
        q, k, v = self._heads(self.qkv(x_t), 3)  # (B, H, 1, hd)
        kc, vc = self._heads(self.ctx(u), 2)
        cache = cache.append(k=_rope(k, self.inv_freq, pos), v=v)  # (B, H, pos+1, hd)
        scale = 1.0 / math.sqrt(self.head_dim)
        scores = _rope(q, self.inv_freq, pos) @ cache["k"].transpose(-1, -2) * scale
        y = _mix(scores, (q * kc).sum(-1, keepdim=True) * scale, cache["v"], vc)
        if cache.pos == self.block_len:  # block complete: the next token starts a new one
            cache = cache.cleared()  # in fresh buffers, so earlier states keep theirs
        return self._merge(y) + u, cache.with_extra(**ssm)

    def state_size(self, seq_len: int) -> int:
        return self.ssm.state_size(seq_len) + 2 * self.d_model * (seq_len % self.block_len)


def _make(cfg: BlockStateConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return BlockStateMixer(d_model, n_layers, cfg)


VARIANT = register(
    Variant(
        name="block_state",
        family="attention + SSM hybrid (block-wise)",
        version=1,
        papers=(
            "Block-State Transformer",
            "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
        ),
        config_cls=BlockStateConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
