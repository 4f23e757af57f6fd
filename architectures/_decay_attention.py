"""Linear attention with a per-step decay, shared by `retnet` (a fixed scalar decay per head) and
`gla` (a data-dependent decay per key dim): S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T and
o_t = q_t S_t, with log decays g_t <= 0. The chunked form cuts time into chunks of L steps: inside
a chunk a masked L x L product (for a scalar decay) or an L x L x d_k weight tensor (for a decay
per key dim) gives the intra-chunk terms, and a loop over chunks carries the state. Every decay it
exponentiates is exp(G_t - G_s) with s <= t, so no exponent is positive and nothing overflows.
A sequential reference and the one-token step sit beside it. Also shared with `mlstm` and
`rwkv`: the loops that carry a state across chunks (`linear_carry`, and `max_plus_carry` for the
running log scale of a stabilised state) and the per-head norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import ConfigError

__all__ = [
    "DecayAttentionMixer",
    "HeadNorm",
    "check_head_split",
    "decay_attention_chunked",
    "decay_attention_ref",
    "decay_attention_step",
    "linear_carry",
    "max_plus_carry",
]

# Shapes: B batch, H heads, T time, K = d_k key width, V = d_v value width; G = 1 (one decay per
# head) or K (one per key dim); n chunks of L steps.


def check_head_split(d_model: int, n_heads: int) -> None:
    """Heads must split d_model evenly."""
    if d_model % n_heads:
        raise ConfigError(f"config key 'n_heads' must divide d_model={d_model}; got {n_heads}")


class HeadNorm(nn.Module):
    """GroupNorm with one group per head, per token: (B, T, H, d) -> (B, T, H * d).

    Each head's output is normalised over its own d channels, then scaled and shifted per channel
    (RetNet's GroupNorm, xLSTM's multi-head LayerNorm, GLA's output norm).
    """

    def __init__(self, n_heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_heads * head_dim))
        self.bias = nn.Parameter(torch.zeros(n_heads * head_dim))

    def forward(self, y: Tensor) -> Tensor:
        y = F.layer_norm(y, (y.shape[-1],), eps=self.eps)
        return y.flatten(-2) * self.weight + self.bias


def decay_attention_step(
    q_t: Tensor, k_t: Tensor, v_t: Tensor, g_t: Tensor, S: Tensor
) -> tuple[Tensor, Tensor]:
    """One token: q_t, k_t (B, H, K), v_t (B, H, V), g_t (B, H, G), S (B, H, K, V) -> o_t, S."""
    S = torch.exp(g_t)[..., None] * S + k_t[..., :, None] * v_t[..., None, :]
    return (q_t[..., None, :] @ S).squeeze(-2), S  # (B, H, V)


def decay_attention_ref(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference: the recurrence token by token.

    q, k (B, H, T, K); v (B, H, T, V); g (B, H, T, G) log decays <= 0; state (B, H, K, V) or
    zeros -> o (B, H, T, V) and the state after the last token.
    """
    S = q.new_zeros(*q.shape[:-2], q.shape[-1], v.shape[-1]) if state is None else state
    outs = []
    # unbind first: indexing a grad-requiring tensor per step makes backward quadratic in T
    steps = zip(q.unbind(-2), k.unbind(-2), v.unbind(-2), g.unbind(-2), strict=True)
    for q_t, k_t, v_t, g_t in steps:
        o_t, S = decay_attention_step(q_t, k_t, v_t, g_t, S)
        outs.append(o_t)
    return torch.stack(outs, dim=-2), S


def _split(z: Tensor, size: int) -> Tensor:
    """(..., T, d) -> (..., n, L, d), zero-padded at the end (a zero log decay keeps the state)."""
    pad = -z.shape[-2] % size
    if pad:
        z = F.pad(z, (0, 0, 0, pad))
    return z.unflatten(-2, (-1, size))


def _intra_chunk(q: Tensor, k: Tensor, G: Tensor) -> Tensor:
    """Causal weights inside each chunk: A[t, s] = sum_d q_td k_sd exp(G_td - G_sd) for s <= t.

    q, k (..., L, K); G (..., L, G) cumulative log decay from the chunk start -> A (..., L, L).
    The exponent is set to -inf above the diagonal before exp, so it is never positive.
    """
    size = q.shape[-2]
    upper = torch.ones(size, size, dtype=torch.bool, device=q.device).triu(1)
    if G.shape[-1] == 1:  # one decay per head: an L x L decay matrix times q k^T
        decay = torch.exp((G - G.transpose(-1, -2)).masked_fill(upper, float("-inf")))
        return (q @ k.transpose(-1, -2)) * decay
    diff = G[..., :, None, :] - G[..., None, :, :]  # (..., L_t, L_s, K)
    weighted_k = torch.exp(diff.masked_fill(upper[..., None], float("-inf"))) * k[..., None, :, :]
    return (weighted_k @ q[..., :, :, None]).squeeze(-1)  # contract K for every t: (..., L, L)


def linear_carry(U: Tensor, decay: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
    """States before each chunk: S_{c+1} = decay_c * S_c + U_c, a loop over the n chunks.

    U (..., n, K, V) each chunk's own contribution to the state at its end; decay (..., n, G, 1)
    the decay over the whole chunk (broadcast against S); state (..., K, V) or zeros ->
    (..., n, K, V) and the state after the last chunk.
    """
    S = torch.zeros_like(U[..., 0, :, :]) if state is None else state
    before = []
    for U_c, d_c in zip(U.unbind(-3), decay.unbind(-3), strict=True):
        before.append(S)
        S = torch.addcmul(U_c, d_c, S)
    return torch.stack(before, dim=-3), S


@torch.no_grad()
def max_plus_carry(local: Tensor, decay: Tensor, start: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Running log scale of a stabilised state: m_{c+1} = max(m_c + decay_c, local_c), no grad.

    local: each chunk's own log scale at its end; decay: log decay over each chunk (same shape,
    chunks along `dim`); start: m before the first chunk -> m before each chunk, m after the last.
    Used by `mlstm` and `rwkv`, whose exponential input weights need the max to stay finite.
    """
    m, before = start, []
    for l_c, d_c in zip(local.unbind(dim), decay.unbind(dim), strict=True):
        before.append(m)
        m = torch.maximum(m + d_c, l_c)
    return torch.stack(before, dim=dim), m


def decay_attention_chunked(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Same result as `decay_attention_ref`, every chunk's intra-chunk part in parallel.

    q, k (B, H, T, K); v (B, H, T, V); g (B, H, T, G) log decays <= 0 with G = 1 or K; state
    (B, H, K, V) or zeros -> o (B, H, T, V) and the final state. With G the cumulative log decay
    from the chunk start (decreasing), o_t = (q_t * exp(G_t)) S_chunk + intra-chunk terms, and a
    chunk adds (k_s * exp(G_last - G_s))^T v_s to the state: every exponent is <= 0.
    """
    t = q.shape[-2]
    size = min(chunk_size, t)
    q, k, v, g = (_split(z, size) for z in (q, k, v, g))  # (B, H, n, L, .)
    G = g.cumsum(-2)
    last = G[..., -1:, :]  # (B, H, n, 1, G)
    U = (k * torch.exp(last - G)).transpose(-1, -2) @ v  # (B, H, n, K, V)
    before, final = linear_carry(U, torch.exp(last).transpose(-1, -2), state)
    o = _intra_chunk(q, k, G) @ v + (q * torch.exp(G)) @ before  # (B, H, n, L, V)
    return o.flatten(-3, -2)[..., :t, :], final


class DecayAttentionMixer(nn.Module):
    """Linear attention with a per-step decay, GroupNorm per head and a swish output gate.

    Shared by retnet (fixed decay per head) and gla (data-dependent decay per key dim): a
    subclass only says how `_project` makes q, k, v, the log decays and the gate. `impl`
    "fast" runs the chunked form (kernel path "chunked"), "reference" the recurrence
    ("sequential"). State {"kv": (B, H, d, d)}, constant in context length.
    """

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, impl: str) -> None:
        super().__init__()
        check_head_split(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.chunk_size = chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.qkvg = nn.Linear(d_model, 4 * d_model, bias=False)
        self.norm = HeadNorm(n_heads, self.head_dim)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, z: Tensor) -> Tensor:
        b, t, _ = z.shape
        return z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q, k, v (B, H, T, d), log decays (B, H, T, d or 1), gate (B, T, D)."""
        raise NotImplementedError

    def _output(self, o: Tensor, gate: Tensor) -> Tensor:
        """o (B, H, T, d), gate (B, T, D) -> (B, T, D)."""
        return self.out(F.silu(gate) * self.norm(o.transpose(1, 2)))

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the state {"kv"} after the last token."""
        q, k, v, g, gate = self._project(x)
        if self.kernel_path == "chunked":
            o, state = decay_attention_chunked(q, k, v, g, self.chunk_size)
        else:
            o, state = decay_attention_ref(q, k, v, g)
        return self._output(o, gate), {"kv": state}

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the chunked form's carry after the last chunk."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        shape = (batch_size, self.n_heads, self.head_dim, self.head_dim)
        return {"kv": torch.zeros(shape, device=device, dtype=dtype)}

    def step(
        self, x_t: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        q, k, v, g, gate = self._project(x_t)
        first = (z[:, :, 0] for z in (q, k, v, g))
        o, kv = decay_attention_step(*first, state["kv"])
        return self._output(o[:, :, None], gate), {"kv": kv}  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * self.head_dim * self.head_dim
