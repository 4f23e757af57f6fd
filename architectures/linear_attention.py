"""Causal linear attention: softmax(q k^T) is replaced by phi(q) phi(k)^T with the positive
feature map phi = elu + 1, so attention becomes a running sum and decoding keeps a fixed
d x d matrix plus a normaliser per head instead of a growing cache. Each output is
phi(q_t) S_t / (phi(q_t) . z_t + eps) with S_t = sum_s<=t phi(k_s) v_s^T and
z_t = sum_s<=t phi(k_s).
The parallel form is chunked: a masked quadratic product inside each chunk plus the state
summed over earlier chunks; a plain recurrent reference (`impl` "reference") sits beside it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from .transformer import check_heads

__all__ = [
    "VARIANT",
    "LinearAttentionConfig",
    "LinearAttentionMixer",
    "linear_attention_chunked",
    "linear_attention_recurrent",
    "linear_attention_ref",
    "linear_attention_scan",
]

EPS = 1e-6  # keeps the normaliser away from 0 (phi > 0, so it is positive anyway)


@dataclass(frozen=True)
class LinearAttentionConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d*d + d per head
    chunk_size: int = integer(64)  # time steps per chunk of the parallel form (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunked form; reference: the recurrence

    def check(self, d_model: int) -> None:
        check_heads(d_model, self.n_heads)


def feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0."""
    return F.elu(x) + 1.0


def _recurrent_step(
    q_t: Tensor, k_t: Tensor, v_t: Tensor, kv: Tensor, k_sum: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One token: q_t, k_t (B, H, d), v_t (B, H, dv); kv (B, H, d, dv), k_sum (B, H, d)."""
    kv = kv + k_t[..., :, None] * v_t[..., None, :]
    k_sum = k_sum + k_t
    num = (q_t[..., None, :] @ kv).squeeze(-2)  # (B, H, dv)
    den = (q_t * k_sum).sum(-1, keepdim=True) + eps  # (B, H, 1)
    return num / den, kv, k_sum


def linear_attention_ref(q: Tensor, k: Tensor, v: Tensor, eps: float = EPS) -> Tensor:
    """Reference: the recurrence token by token. q, k = phi(.) (B, H, T, d), v (B, H, T, dv)."""
    return linear_attention_recurrent(q, k, v, eps)[0]


def linear_attention_recurrent(
    q: Tensor, k: Tensor, v: Tensor, eps: float = EPS
) -> tuple[Tensor, Tensor, Tensor]:
    """`linear_attention_ref` that also returns the running sums after the last token (as
    `linear_attention_scan` does): y (B, H, T, dv), kv (B, H, d, dv), k_sum (B, H, d)."""
    b, h, _, d = q.shape
    kv = q.new_zeros(b, h, d, v.shape[-1])
    k_sum = q.new_zeros(b, h, d)
    ys = []
    # unbind first: indexing a grad-requiring tensor per step makes backward quadratic in T
    for q_t, k_t, v_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), strict=True):
        y_t, kv, k_sum = _recurrent_step(q_t, k_t, v_t, kv, k_sum, eps)
        ys.append(y_t)
    return torch.stack(ys, dim=2), kv, k_sum  # (B, H, T, dv)


def _before_and_total(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Sum of the entries before each index along `dim` (first is 0), and the sum of them all."""
    running = x.cumsum(dim)
    before = torch.cat(
        [torch.zeros_like(x.narrow(dim, 0, 1)), running.narrow(dim, 0, x.shape[dim] - 1)], dim=dim
    )
    return before, running.select(dim, -1).clone()  # a copy: the state outlives the pass


def linear_attention_scan(
    q: Tensor, k: Tensor, v: Tensor, chunk_size: int, eps: float = EPS
) -> tuple[Tensor, Tensor, Tensor]:
    """`linear_attention_chunked` that also returns the running sums after the last token:
    y (B, H, T, dv), kv = sum_s phi(k_s) v_s^T (B, H, d, dv), k_sum = sum_s phi(k_s) (B, H, d)."""
    b, h, t, _ = q.shape
    size = min(chunk_size, t)
    pad = -t % size
    if pad:
        q, k, v = (F.pad(z, (0, 0, 0, pad)) for z in (q, k, v))
    n = (t + pad) // size
    q, k, v = (z.reshape(b, h, n, size, z.shape[-1]) for z in (q, k, v))  # (B, H, n, L, d)
    kv_before, kv = _before_and_total(k.transpose(-1, -2) @ v, dim=2)  # (B, H, n, d, dv)
    k_before, k_sum = _before_and_total(k.sum(3), dim=2)  # (B, H, n, d)
    scores = (q @ k.transpose(-1, -2)).tril()  # (B, H, n, L, L), causal within the chunk
    num = scores @ v + q @ kv_before  # (B, H, n, L, dv)
    den = scores.sum(-1) + (q @ k_before[..., None]).squeeze(-1) + eps  # (B, H, n, L)
    y = num / den[..., None]
    return y.reshape(b, h, n * size, -1)[:, :, :t], kv, k_sum


def linear_attention_chunked(
    q: Tensor, k: Tensor, v: Tensor, chunk_size: int, eps: float = EPS
) -> Tensor:
    """Same result as `linear_attention_ref` with every chunk processed in parallel.

    q, k = phi(.) (B, H, T, d), v (B, H, T, dv) -> (B, H, T, dv). Inside a chunk of length L the
    masked L x L product phi(Q) phi(K)^T gives the intra-chunk terms; the states of all earlier
    chunks, an exclusive prefix sum over chunks, give the rest. Zero padding at the end is inert.
    """
    return linear_attention_scan(q, k, v, chunk_size, eps)[0]


class LinearAttentionMixer(nn.Module):
    """Multi-head causal linear attention; state {"kv": (B, H, d, d), "k_sum": (B, H, d)}.
    `impl` "fast" runs the chunked form (kernel path "chunked"), "reference" the recurrence
    token by token ("sequential")."""

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, impl: str = "fast") -> None:
        super().__init__()
        check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.chunk_size = chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.feature_dim = self.head_dim  # width of phi(q), phi(k); random-feature maps differ
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return feature_map(q), feature_map(k), v  # (B, H, T, d)

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.d_model))  # (B, H, T, d) -> (B, T, D)

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the running sums after the last token."""
        if self.kernel_path == "chunked":
            y, kv, k_sum = linear_attention_scan(*self._qkv(x), self.chunk_size)
        else:
            y, kv, k_sum = linear_attention_recurrent(*self._qkv(x))
        return self._merge(y), {"kv": kv, "k_sum": k_sum}

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the running sums, the total of the per-chunk sums the pass forms."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        shape = (batch_size, self.n_heads, self.feature_dim)
        return {
            "kv": torch.zeros(*shape, self.head_dim, device=device, dtype=dtype),
            "k_sum": torch.zeros(shape, device=device, dtype=dtype),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        q, k, v = (z[:, :, 0] for z in self._qkv(x_t))  # (B, H, d)
        y, kv, k_sum = _recurrent_step(q, k, v, state["kv"], state["k_sum"], EPS)
        return self._merge(y[:, :, None]), {"kv": kv, "k_sum": k_sum}

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.feature_dim * (self.head_dim + 1)


def _make(cfg: LinearAttentionConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return LinearAttentionMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="linear_attention",
        family="kernel attention",
        version=1,
        papers=(
            "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
            "The Devil in Linear Transformer",
        ),
        config_cls=LinearAttentionConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
