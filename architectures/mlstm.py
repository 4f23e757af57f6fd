"""xLSTM's mLSTM cell: per head a matrix memory C_t = f_t C_{t-1} + i_t k_t v_t^T and a normaliser
n_t = f_t n_{t-1} + i_t k_t, read out as h_t = C_t^T q_t / max(|n_t . q_t|, 1), with an
exponential input gate i_t = exp(i~_t), a sigmoid forget gate f_t (both scalars per head, from the
input) and a sigmoid output gate on the per-head GroupNorm of h. Exponential gates overflow
unless stabilised: the state is kept scaled by exp(-m_t) with m_t = max(log f_t + m_{t-1}, i~_t),
which cancels exactly in h, so every exponent evaluated is <= 0. Decoding keeps C, n and m per
head: constant in context length. The parallel form is chunkwise (the stabilised quadratic form
inside each chunk, the scaled state carried across chunks); the recurrence is the reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._decay_attention import HeadNorm, check_head_split, linear_carry, max_plus_carry

__all__ = ["VARIANT", "MLSTMConfig", "MLSTMMixer", "mlstm_chunked", "mlstm_ref"]

# Shapes: B batch, H heads, T time, K key width, V value width; n chunks of L steps.
# State (C, n, m): C (B, H, K, V) and n (B, H, K) scaled by exp(-m); m (B, H) the log scale.
# Every m is a stabiliser only (h does not depend on it), so it is detached: the gradient is exact.

State = tuple[Tensor, Tensor, Tensor]  # (C, n, m), as the kernels take and return it
STATE_KEYS = ("memory", "normalizer", "stabilizer")  # the mixer's decoding state: C, n, m


def _as_dict(state: State) -> dict[str, Tensor]:
    return dict(zip(STATE_KEYS, state, strict=True))


@dataclass(frozen=True)
class MLSTMConfig:
    n_heads: int = integer(4)  # head width d = d_model / n_heads; state d*d + d + 1 per head
    chunk_size: int = integer(64)  # time steps per chunk of the chunkwise form (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunkwise form; reference: the recurrence

    def check(self, d_model: int) -> None:
        check_head_split(d_model, self.n_heads)


def _zero_state(q: Tensor, v: Tensor) -> State:
    lead = q.shape[:2]
    C = q.new_zeros(*lead, q.shape[-1], v.shape[-1])
    return C, q.new_zeros(*lead, q.shape[-1]), q.new_zeros(lead)


def _readout(num: Tensor, den: Tensor, m: Tensor) -> Tensor:
    """h = num / max(|den|, exp(-m)): the unscaled max(|n . q|, 1) bound, in scaled units.

    exp(-m) underflows to 0 for m > ~88; the floor at the smallest normal number keeps 0 / 0
    (q = 0 on padding) out of the output and its gradient.
    """
    bound = torch.maximum(den.abs(), torch.exp(-m)).clamp_min(torch.finfo(den.dtype).tiny)
    return num / bound[..., None]


def mlstm_step(
    q_t: Tensor, k_t: Tensor, v_t: Tensor, log_f: Tensor, log_i: Tensor, state: State
) -> tuple[Tensor, State]:
    """One token: q_t, k_t (B, H, K), v_t (B, H, V), log_f, log_i (B, H) -> h_t (B, H, V)."""
    C, n, m = state
    m_new = torch.maximum(log_f + m, log_i).detach()
    f, i = torch.exp(log_f + m - m_new), torch.exp(log_i - m_new)  # both <= 1
    C = f[..., None, None] * C + (i[..., None] * k_t)[..., :, None] * v_t[..., None, :]
    n = f[..., None] * n + i[..., None] * k_t
    num = (q_t[..., None, :] @ C).squeeze(-2)
    return _readout(num, (q_t * n).sum(-1), m_new), (C, n, m_new)


def mlstm_ref(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, log_i: Tensor, state: State | None = None
) -> tuple[Tensor, State]:
    """Reference: the stabilised recurrence token by token.

    q, k (B, H, T, K); v (B, H, T, V); log_f, log_i (B, H, T); state (C, n, m) or zeros ->
    h (B, H, T, V) and the state after the last token.
    """
    state = _zero_state(q, v) if state is None else state
    hs = []
    # unbind first: indexing a grad-requiring tensor per step makes backward quadratic in T
    steps = zip(*(z.unbind(2) for z in (q, k, v, log_f, log_i)), strict=True)
    for q_t, k_t, v_t, f_t, i_t in steps:
        h_t, state = mlstm_step(q_t, k_t, v_t, f_t, i_t, state)
        hs.append(h_t)
    return torch.stack(hs, dim=2), state


def _split(z: Tensor, size: int, value: float = 0.0) -> Tensor:
    """(B, H, T, ...) -> (B, H, n, L, ...), padded at the end with `value`."""
    pad = -z.shape[2] % size
    if pad:
        z = F.pad(z, (0, 0) * (z.dim() - 3) + (0, pad), value=value)
    return z.unflatten(2, (-1, size))


def _carry(local: Tensor, m_loc: Tensor, F_end: Tensor, state: State) -> tuple[State, State]:
    """Scaled states before each chunk and after the last.

    local (B, H, n, K, V+1): each chunk's own [C | n] at its end, scaled by exp(-m_loc) (B, H, n);
    F_end (B, H, n): each chunk's total log forget. The log scales m come first (a max-plus
    scan), then [C | n] is a plain linear recurrence with weights <= 1.
    """
    C, n, m = state
    m0, m_last = max_plus_carry(m_loc, F_end, m, dim=-1)  # (B, H, n), (B, H)
    m_next = torch.cat([m0[..., 1:], m_last[..., None]], dim=-1)
    keep = torch.exp(F_end + m0 - m_next)[..., None, None]
    add = torch.exp(m_loc - m_next)[..., None, None] * local
    CN0, CN = linear_carry(add, keep, torch.cat([C, n[..., None]], dim=-1))
    return (CN0[..., :-1], CN0[..., -1], m0), (CN[..., :-1], CN[..., -1], m_last)


def mlstm_chunked(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, log_i: Tensor, chunk_size: int,
    state: State | None = None,
) -> tuple[Tensor, State]:  # fmt: skip
    """Same result as `mlstm_ref`, every chunk's quadratic part in parallel (shapes as there).

    With F the cumulative log forget from the chunk start, token s weighs exp(F_t - F_s + i~_s)
    in the output at t (s <= t) and the carried state weighs exp(F_t + m); each row is scaled by
    its max m_t so the largest weight is 1. Padding gets i~ = -inf (no input) and f = 1.
    """
    t = q.shape[2]
    size = min(chunk_size, t)
    state = _zero_state(q, v) if state is None else state
    q, k, v, log_f = (_split(z, size) for z in (q, k, v, log_f))
    log_i = _split(log_i, size, float("-inf"))
    F_cum = log_f.cumsum(-1)  # (B, H, n, L)
    end = F_cum[..., -1:] - F_cum + log_i  # log weight of each token in its chunk's final state
    m_loc = end.amax(-1).detach()  # (B, H, n)
    wk = k * torch.exp(end - m_loc[..., None])[..., None]  # (B, H, n, L, K)
    local = torch.cat([wk.transpose(-1, -2) @ v, wk.sum(-2)[..., None]], dim=-1)
    (C0, n0, m0), final = _carry(local, m_loc, F_cum[..., -1], state)
    upper = torch.ones(size, size, dtype=torch.bool, device=q.device).triu(1)
    W = (F_cum[..., :, None] - F_cum[..., None, :] + log_i[..., None, :]).masked_fill(
        upper, float("-inf")
    )  # (B, H, n, L, L)
    from_state = F_cum + m0[..., None]  # (B, H, n, L)
    m = torch.maximum(W.amax(-1), from_state).detach()
    A = (q @ k.transpose(-1, -2)) * torch.exp(W - m[..., None])
    scale = torch.exp(from_state - m)
    num = A @ v + scale[..., None] * (q @ C0)  # (B, H, n, L, V)
    den = A.sum(-1) + scale * (q @ n0[..., None]).squeeze(-1)
    h = _readout(num, den, m)
    return h.flatten(2, 3)[:, :, :t], final


class MLSTMMixer(nn.Module):
    """mLSTM layer: q, k, v and gates from the input; state {"memory": C (B, H, d, d),
    "normalizer": n (B, H, d), "stabilizer": m (B, H)} as above. `impl` "fast" runs the
    chunkwise form (kernel path "chunked"), "reference" the recurrence ("sequential")."""

    # the gate biases set the forget time scales (xLSTM decays only >= 2-D weights)
    no_weight_decay = ("gates.bias",)

    def __init__(self, d_model: int, n_heads: int, chunk_size: int, impl: str) -> None:
        super().__init__()
        check_head_split(d_model, n_heads)
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.chunk_size = chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.qkvo = nn.Linear(d_model, 4 * d_model, bias=False)
        self.gates = nn.Linear(d_model, 2 * n_heads)  # input and forget pre-activations per head
        self.norm = HeadNorm(n_heads, self.head_dim)
        self.out = nn.Linear(d_model, d_model, bias=False)
        with torch.no_grad():  # xLSTM init: gates start from their biases alone
            self.gates.weight.zero_()
            nn.init.normal_(self.gates.bias[:n_heads], std=0.1)  # input gate
            self.gates.bias[n_heads:] = torch.linspace(3.0, 6.0, n_heads)  # forget gate, f ~ 1

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        """x (B, T, D) -> q, k, v (B, H, T, d), log_f, log_i (B, H, T), output gate (B, T, D)."""
        b, t, _ = x.shape
        q, k, v, o = self.qkvo(x).split(self.d_model, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        i_pre, f_pre = self.gates(x).transpose(1, 2).chunk(2, dim=1)  # (B, H, T) each
        return q, k * self.head_dim**-0.5, v, F.logsigmoid(f_pre), i_pre, o

    def _output(self, h: Tensor, o: Tensor) -> Tensor:
        """h (B, H, T, d), o (B, T, D) -> (B, T, D)."""
        return self.out(torch.sigmoid(o) * self.norm(h.transpose(1, 2)))

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the state after the last token."""
        q, k, v, log_f, log_i, o = self._project(x)
        if self.kernel_path == "chunked":
            h, state = mlstm_chunked(q, k, v, log_f, log_i, self.chunk_size)
        else:
            h, state = mlstm_ref(q, k, v, log_f, log_i)
        return self._output(h, o), _as_dict(state)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the chunkwise form's scaled (C, n) and log scale m after the last
        chunk (from the same zero start as `init_state`)."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        h, d = self.n_heads, self.head_dim
        return _as_dict((
            torch.zeros(batch_size, h, d, d, device=device, dtype=dtype),
            torch.zeros(batch_size, h, d, device=device, dtype=dtype),
            torch.zeros(batch_size, h, device=device, dtype=dtype),
        ))

    def step(
        self, x_t: Tensor, state: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        q, k, v, log_f, log_i, o = self._project(x_t)
        first = (z[:, :, 0] for z in (q, k, v, log_f, log_i))
        C, n, m = (state[key] for key in STATE_KEYS)
        h, new = mlstm_step(*first, (C, n, m))
        return self._output(h[:, :, None], o), _as_dict(new)  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.n_heads * (self.head_dim * self.head_dim + self.head_dim + 1)


def _make(cfg: MLSTMConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return MLSTMMixer(d_model, cfg.n_heads, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="mlstm",
        family="recurrent (xLSTM)",
        version=1,
        papers=(
            "Bio-xLSTM: Generative modeling, representation and in-context learning of "
            "biological and chemical sequences",
            "xLSTM: Extended Long Short-Term Memory",
        ),
        config_cls=MLSTMConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
