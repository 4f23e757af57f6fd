"""RWKV-4 time mixing: each token is mixed with the previous one (token shift) into a key k, value v
and receptance r; per channel, WKV_t = (sum_{s<t} e^{-(t-1-s) w + k_s} v_s + e^{u + k_t} v_t) /
(the same sum without v) is an attention whose weights decay by e^{-w} per step, with a bonus u for
the current token, and the output is W_o (sigmoid(r) * WKV). The channel mixer is the backbone's
MLP, so only the time mix is here. Exponentials of the keys overflow unless stabilised: the sums
are kept scaled by e^{-p} with p their running max, so every exponent evaluated is <= 0. Decoding
keeps the previous input, both sums and p per channel: constant in context length. The parallel
form is chunked: exact stabilised weights inside each chunk, the scaled sums carried across
chunks; the sequential WKV is the reference. Init follows RWKV-4 (decay, bonus and mix curves)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, Variant, choice, integer, register
from ._decay_attention import linear_carry, max_plus_carry

__all__ = ["VARIANT", "RWKVConfig", "RWKVTimeMix", "wkv_chunked", "wkv_ref"]

# Shapes: B batch, T time, D channels; n chunks of L steps. The WKV state (a, b, p), each (B, D):
# numerator a e^p and denominator b e^p. p is a stabiliser only (the ratio does not depend on it),
# so it is detached: the gradient is exact.

State = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class RWKVConfig:
    # time steps per chunk (speed only); the intra-chunk tensor is L x L x D per chunk, so small
    # chunks win: on CPU, L = 8 ran 2x faster than 16 and 8x faster than 64 at T = 16K, d_model 64
    chunk_size: int = integer(8)
    impl: str = choice("fast", IMPLS)  # fast: the chunked WKV; reference: the recurrence


def _empty_state(k: Tensor) -> State:
    b, d = k.shape[0], k.shape[-1]
    p = k.new_full((b, d), torch.finfo(k.dtype).min)  # no terms yet: weight e^p = 0
    return k.new_zeros(b, d), k.new_zeros(b, d), p


def wkv_step(
    k_t: Tensor, v_t: Tensor, w: Tensor, u: Tensor, state: State
) -> tuple[Tensor, State]:
    """One token: k_t, v_t (B, D); w (D) log decay per step (< 0); u (D) bonus -> WKV_t (B, D)."""
    a, b, p = state
    bonus = u + k_t
    m = torch.maximum(p, bonus).detach()
    e_state, e_bonus = torch.exp(p - m), torch.exp(bonus - m)
    y = (e_state * a + e_bonus * v_t) / (e_state * b + e_bonus)
    decayed = p + w
    m = torch.maximum(decayed, k_t).detach()
    e_state, e_new = torch.exp(decayed - m), torch.exp(k_t - m)
    return y, (e_state * a + e_new * v_t, e_state * b + e_new, m)


def wkv_ref(
    k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: State | None = None
) -> tuple[Tensor, State]:
    """Reference: the stabilised WKV recurrence token by token (RWKV-4's CUDA kernel in PyTorch).

    k, v (B, T, D); w (D) log decay per step (< 0); u (D); state (a, b, p) or empty -> WKV
    (B, T, D) and the state after the last token.
    """
    state = _empty_state(k) if state is None else state
    ys = []
    # unbind first: indexing a grad-requiring tensor per step makes backward quadratic in T
    for k_t, v_t in zip(k.unbind(1), v.unbind(1), strict=True):
        y_t, state = wkv_step(k_t, v_t, w, u, state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def _carry(local: Tensor, p_end: Tensor, decay: Tensor, state: State) -> tuple[State, State]:
    """Scaled sums before each chunk and after the last.

    local (B, n, 2, D): each chunk's own [a, b] at its last token, scaled by exp(-p_end)
    (B, n, D); decay (n, D): the log decay over each chunk. The log scales p come first (a
    max-plus scan), then [a, b] is a plain linear recurrence with weights <= 1.
    """
    a, b, p = state
    p0, p_last = max_plus_carry(p_end, decay.expand_as(p_end), p, dim=1)  # (B, n, D), (B, D)
    p_next = torch.cat([p0[:, 1:], p_last[:, None]], dim=1)
    keep = torch.exp(p0 + decay - p_next)[:, :, None]
    add = torch.exp(p_end - p_next)[:, :, None] * local
    ab0, ab = linear_carry(add, keep, torch.stack([a, b], dim=1))
    return (ab0[:, :, 0], ab0[:, :, 1], p0), (ab[:, 0], ab[:, 1], p_last)


def _chunk_weights(w: Tensor, u: Tensor, size: int) -> Tensor:
    """Log weight of step s in the output at step t of one chunk, (L_t, L_s, D).

    (t-1-s) w for s < t, the bonus u for s = t, -inf for s > t (the key k_s is added later).
    """
    pos = torch.arange(size, device=w.device)
    rel = (pos[:, None] - 1 - pos[None, :]).to(w.dtype)[..., None]  # (L, L, 1)
    logw = torch.where(rel >= 0, rel * w, float("-inf"))
    return torch.where(rel == -1, u, logw)


def wkv_chunked(
    k: Tensor, v: Tensor, w: Tensor, u: Tensor, chunk_size: int, state: State | None = None
) -> tuple[Tensor, State]:
    """Same result as `wkv_ref` (arguments as there), every chunk's intra-chunk part in parallel.

    Inside a chunk, each output row t is scaled by its own max log weight m_t over the chunk's
    tokens and the carried sums (weight t w + p), so the largest weight is 1. Padding at the end
    gets k = -inf (no weight), and the last chunk's sums are taken at its last real token.
    """
    bsz, t, d = k.shape
    size = min(chunk_size, t)
    pad = -t % size
    state = _empty_state(k) if state is None else state
    if pad:
        k = F.pad(k, (0, 0, 0, pad), value=float("-inf"))
        v = F.pad(v, (0, 0, 0, pad))
    k, v = k.view(bsz, -1, size, d), v.view(bsz, -1, size, d)  # (B, n, L, D)
    pos = torch.arange(size, device=k.device, dtype=k.dtype)[:, None]  # (L, 1)
    end = (size - 1 - pos) * w + k  # log weight of each token in its chunk's final sums
    p_loc = end.amax(2).detach()  # (B, n, D)
    e = torch.exp(end - p_loc[:, :, None])
    steps = torch.full((k.shape[1], 1), size, device=k.device, dtype=k.dtype)  # real steps
    steps[-1] -= pad
    p_end = p_loc - (size - steps) * w  # log scale at each chunk's last real token
    local = torch.stack([(e * v).sum(2), e.sum(2)], dim=2)  # (B, n, 2, D)
    (a0, b0, p0), final = _carry(local, p_end, steps * w, state)
    W = _chunk_weights(w, u, size) + k[:, :, None]  # (B, n, L_t, L_s, D)
    from_state = pos * w + p0[:, :, None]  # (B, n, L, D)
    m = torch.maximum(W.amax(3), from_state).detach()
    E, scale = torch.exp(W - m[:, :, :, None]), torch.exp(from_state - m)
    num = (E * v[:, :, None]).sum(3) + scale * a0[:, :, None]
    den = E.sum(3) + scale * b0[:, :, None]
    y = (num / den).flatten(1, 2)[:, :t]
    return y, final


class RWKVTimeMix(nn.Module):
    """RWKV-4 time-mix block; state {"x": previous input, "num", "den", "max"}, each (B, D)."""

    # decay, bonus and token-shift curves (RWKV-LM decays only 2-D ".weight" matrices)
    no_weight_decay = ("time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r")

    def __init__(
        self, d_model: int, layer_idx: int, n_layers: int, chunk_size: int, impl: str
    ) -> None:
        super().__init__()
        self.d_model, self.chunk_size = d_model, chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.output = nn.Linear(d_model, d_model, bias=False)
        self._init_time(layer_idx, n_layers)

    def _init_time(self, layer_idx: int, n_layers: int) -> None:
        """RWKV-4's init: decay speeds e^-5 .. e^3 across channels, zigzag bonus, mix curves."""
        d = self.d_model
        depth = layer_idx / max(n_layers - 1, 1)  # 0 at the first layer, 1 at the last
        shallow = 1.0 - layer_idx / n_layers  # 1 at the first layer, towards 0
        frac = torch.arange(d, dtype=torch.float32) / d
        h = torch.arange(d, dtype=torch.float32) / max(d - 1, 1)
        zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(d)], dtype=torch.float32) * 0.5
        self.time_decay = nn.Parameter(-5 + 8 * h ** (0.7 + 1.3 * depth))  # w = exp(time_decay)
        self.time_first = nn.Parameter(math.log(0.3) + zigzag)  # the bonus u
        self.time_mix_k = nn.Parameter(frac**shallow)
        self.time_mix_v = nn.Parameter(frac**shallow + 0.3 * depth)
        self.time_mix_r = nn.Parameter(frac ** (0.5 * shallow))

    def _project(self, x: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x and the shifted input prev (B, T, D) -> k, v, sigmoid(r) (B, T, D)."""

        def mix(mu: Tensor) -> Tensor:
            return torch.lerp(prev, x, mu)  # x mu + prev (1 - mu)

        k = self.key(mix(self.time_mix_k))
        v = self.value(mix(self.time_mix_v))
        return k, v, torch.sigmoid(self.receptance(mix(self.time_mix_r)))

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the decoding state after the last token."""
        prev = F.pad(x, (0, 0, 1, -1))  # token shift: x_{t-1}, zeros before the first token
        k, v, r = self._project(x, prev)
        w = -torch.exp(self.time_decay)
        if self.kernel_path == "chunked":
            y, (a, b, p) = wkv_chunked(k, v, w, self.time_first, self.chunk_size)
        else:
            y, (a, b, p) = wkv_ref(k, v, w, self.time_first)
        return self.output(r * y), {"x": x[:, -1].clone(), "num": a, "den": b, "max": p}

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the last input (the next token shift) and the chunked WKV's scaled
        sums and log scale after the last token."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        zeros = torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)
        a, b, p = _empty_state(zeros[:, None])
        return {"x": zeros, "num": a, "den": b, "max": p}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x = x_t[:, 0]  # (B, D)
        k, v, r = self._project(x, state["x"])
        wkv = (state["num"], state["den"], state["max"])
        y, (a, b, p) = wkv_step(k, v, -torch.exp(self.time_decay), self.time_first, wkv)
        return self.output(r * y)[:, None], {"x": x, "num": a, "den": b, "max": p}

    def state_size(self, seq_len: int) -> int:
        return 4 * self.d_model  # previous input, numerator, denominator, max


def _make(cfg: RWKVConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return RWKVTimeMix(d_model, layer_idx, n_layers, cfg.chunk_size, cfg.impl)


VARIANT = register(
    Variant(
        name="rwkv",
        family="recurrent",
        version=1,
        papers=("RWKV: Reinventing RNNs for the Transformer Era",),
        config_cls=RWKVConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
