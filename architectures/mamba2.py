"""Mamba-2, the state-space dual (SSD) layer: one projection gives a gate z, a stream x, shared
input/output maps B, C (N each) and a step size dt per head; x, B and C pass a short causal
depthwise convolution and SiLU. Each of H heads of P channels keeps a P x N state and, unlike
Mamba-1, decays it by one scalar per head and step, h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,
y_t = h_t C_t + D x_t, then y * SiLU(z) is RMS-normalised and projected out. A scalar decay makes
the layer a semiseparable matrix, so the parallel form is chunked: inside a chunk outputs are a
masked L x L attention-like product weighted by exp(segsum(dt A)) (all exponents <= 0), across
chunks a short recurrence carries the state; a sequential reference sits beside it. Decoding
keeps the conv's last d_conv - 1 inputs and H x P x N numbers: constant in context length."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, ConfigError, Variant, choice, integer, register
from ._fftconv import causal_depthwise_conv, conv_window

__all__ = ["VARIANT", "Mamba2Config", "Mamba2Mixer", "segsum", "ssd_chunked", "ssd_ref"]

# Shapes: B batch, T time, H heads, P head width, N state size, E = expand * D = H P,
# n chunks of L steps.


@dataclass(frozen=True)
class Mamba2Config:
    d_state: int = integer(16)  # N, state size per head channel (B and C shared by all heads)
    n_heads: int = integer(4)  # H; head width P = expand * d_model / n_heads
    expand: int = integer(2)  # E = expand * d_model
    d_conv: int = integer(4)  # causal depthwise conv width
    chunk_size: int = integer(32)  # L, steps per chunk of the SSD form (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunked SSD; reference: the recurrence

    def check(self, d_model: int) -> None:
        if (self.expand * d_model) % self.n_heads:
            raise ConfigError(
                f"config key 'n_heads' must divide expand * d_model = {self.expand * d_model}; "
                f"got {self.n_heads}"
            )


def _ssd_step(
    x_t: Tensor, dt_t: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One step: x_t (B, H, P), dt_t (B, H), A (H), B_t, C_t (B, N), h (B, H, P, N)."""
    decay = torch.exp(dt_t * A)[:, :, None, None]  # (B, H, 1, 1), dt >= 0 and A < 0: <= 1
    h = decay * h + (dt_t[:, :, None] * x_t)[..., None] * B_t[:, None, None, :]
    return (h @ C_t[:, None, :, None]).squeeze(-1), h  # (B, H, P)


def ssd_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference, one step at a time: x (B, T, H, P), dt (B, T, H), A (H), B, C (B, T, N),
    h0 (B, H, P, N) or zeros -> y (B, T, H, P) without the D skip, final state (B, H, P, N)."""
    h = x.new_zeros(*x.shape[:1], *x.shape[2:], B.shape[-1]) if h0 is None else h0
    ys = []
    # unbind first: indexing x[:, t] on a grad-requiring tensor makes backward quadratic in T
    for x_t, dt_t, B_t, C_t in zip(
        x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), strict=True
    ):
        y_t, h = _ssd_step(x_t, dt_t, A, B_t, C_t, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1), h


def segsum(a: Tensor) -> Tensor:
    """a (..., L) -> (..., L, L) with [i, j] = a_{j+1} + ... + a_i for j <= i, -inf above.

    Summed by a masked cumsum rather than as a difference of cumsums, which cancels badly.
    """
    size = a.shape[-1]
    ones = torch.ones(size, size, dtype=torch.bool, device=a.device)
    x = a[..., :, None].expand(*a.shape, size).masked_fill(~ones.tril(-1), 0)  # [k, j] = a_k, k > j
    return x.cumsum(-2).masked_fill(~ones.tril(), -math.inf)


def _pad_chunks(z: Tensor, size: int) -> Tensor:
    """(B, T, ...) -> (B, n, L, ...), zero-padded at the end: dt = 0 and x = 0 steps are inert."""
    pad = -z.shape[1] % size
    z = F.pad(z, (0, 0) * (z.dim() - 2) + (0, pad))
    return z.view(z.shape[0], -1, size, *z.shape[2:])


def _carry(states: Tensor, chunk_decay: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """State before each chunk and the final one: states (B, H, n, P, N), decay (B, H, n)."""
    h, starts = h0, []
    for s, d in zip(states.unbind(2), chunk_decay.unbind(2), strict=True):
        starts.append(h)
        h = d[..., None, None] * h + s
    return torch.stack(starts, 2), h  # (B, H, n, P, N), (B, H, P, N)


def ssd_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Same result and gradients as `ssd_ref`, chunk by chunk (the SSD algorithm).

    Inside chunk c: Y_diag = (C B^T * exp(segsum(a))) X with a = dt A and X = dt x; the chunk's
    own contribution to its end state is sum_l exp(a_{l+1} + ... + a_L) X_l B_l^T; a loop over
    chunks carries the state, which reaches step l of the next chunk decayed by exp(cumsum(a)_l).
    Runs in float32 when given lower precision.
    """
    dtype, t, size = x.dtype, x.shape[1], min(chunk_size, x.shape[1])
    work = torch.promote_types(x.dtype, torch.float32)  # float32 at least, float64 stays
    x, dt, A, B, C = (z.to(work) for z in (x, dt, A, B, C))
    X = _pad_chunks(x * dt[..., None], size).permute(0, 3, 1, 2, 4)  # (B, H, n, L, P)
    a = _pad_chunks(dt * A, size).permute(0, 3, 1, 2)  # (B, H, n, L), log decays <= 0
    Bc, Cc = _pad_chunks(B, size)[:, None], _pad_chunks(C, size)[:, None]  # (B, 1, n, L, N)
    a_cum = a.cumsum(-1)
    y = (Cc @ Bc.transpose(-1, -2) * torch.exp(segsum(a))) @ X  # (B, H, n, L, P)
    to_end = torch.exp(a_cum[..., -1:] - a_cum)[..., None]  # (B, H, n, L, 1), <= 1
    states = (X * to_end).transpose(-1, -2) @ Bc  # (B, H, n, P, N)
    if h0 is None:
        h0 = X.new_zeros(*states.shape[:2], *states.shape[3:])
    starts, h = _carry(states, torch.exp(a_cum[..., -1]), h0.to(work))
    y = y + (Cc @ starts.transpose(-1, -2)) * torch.exp(a_cum)[..., None]  # carried state
    y = y.permute(0, 2, 3, 1, 4).flatten(1, 2)[:, :t]  # (B, T, H, P)
    return y.to(dtype), h.to(dtype)


class Mamba2Mixer(nn.Module):
    """Mamba-2 block (after state-spaces/mamba `mamba2_simple.py`, one group of B, C);
    state {"conv": (B, E + 2N, d_conv - 1), "ssm": (B, H, P, N)}."""

    no_weight_decay = ("A_log", "D", "dt_bias")  # as mamba2_simple's `_no_weight_decay`

    def __init__(
        self, d_model: int, n_layers: int, *, d_state: int, n_heads: int, expand: int,
        d_conv: int, chunk_size: int, impl: str,
    ) -> None:  # fmt: skip
        super().__init__()
        e = expand * d_model
        self.d_inner, self.d_state, self.d_conv, self.n_heads = e, d_state, d_conv, n_heads
        self.head_dim, self.chunk_size = e // n_heads, chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.in_proj = nn.Linear(d_model, 2 * e + 2 * d_state + n_heads, bias=False)
        width = e + 2 * d_state  # x, B, C share the conv
        self.conv = nn.Conv1d(width, width, d_conv, groups=width)  # weight (W, 1, d_conv)
        self.A_log = nn.Parameter(torch.log(torch.empty(n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(n_heads))
        dt = torch.exp(torch.rand(n_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.norm = nn.RMSNorm(e, eps=1e-5)
        self.out_proj = nn.Linear(e, d_model, bias=False)
        with torch.no_grad():  # residual-branch output scaled by depth, as Mamba's MixerModel does
            self.out_proj.weight /= math.sqrt(2 * n_layers)

    def _split(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., 2E + 2N + H) -> z (..., E), xBC (..., E + 2N), dt (..., H) after softplus."""
        z, xbc, dt = zxbcdt.split([self.d_inner, self.d_inner + 2 * self.d_state, self.n_heads], -1)
        return z, xbc, F.softplus(dt + self.dt_bias)

    def _ssm_inputs(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """xBC (..., E + 2N) after conv -> x (..., H, P), B, C (..., N)."""
        x, B, C = xbc.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        return x.unflatten(-1, (self.n_heads, self.head_dim)), B, C

    def _output(self, y: Tensor, x: Tensor, z: Tensor) -> Tensor:
        """y, x (..., H, P) + D skip, gated by SiLU(z), normalised, projected: (..., D)."""
        y = (y + self.D[:, None] * x).flatten(-2)  # (..., E)
        return self.out_proj(self.norm(y * F.silu(z)))

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the decoding state after the last token."""
        z, xbc_in, dt = self._split(self.in_proj(x))  # (B, T, .)
        xbc = F.silu(causal_depthwise_conv(xbc_in, self.conv.weight[:, 0], self.conv.bias))
        x, B, C = self._ssm_inputs(xbc)  # (B, T, H, P), (B, T, N) x 2
        A = -torch.exp(self.A_log)  # (H,)
        if self.kernel_path == "chunked":
            y, h = ssd_chunked(x, dt, A, B, C, chunk_size=self.chunk_size)
        else:
            y, h = ssd_ref(x, dt, A, B, C)
        state = {"conv": conv_window(xbc_in, self.d_conv - 1), "ssm": h}
        return self._output(y, x, z), state  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the conv's last d_conv - 1 inputs and the SSD's final carry."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        kw, width = {"device": device, "dtype": dtype}, self.d_inner + 2 * self.d_state
        return {
            "conv": torch.zeros(batch_size, width, self.d_conv - 1, **kw),
            "ssm": torch.zeros(batch_size, self.n_heads, self.head_dim, self.d_state, **kw),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        z, xbc, dt = self._split(self.in_proj(x_t[:, 0]))  # (B, .)
        window = torch.cat([state["conv"], xbc[:, :, None]], dim=-1)  # (B, E + 2N, d_conv)
        xbc = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)
        x, B, C = self._ssm_inputs(xbc)  # (B, H, P), (B, N) x 2
        y, h = _ssd_step(x, dt, -torch.exp(self.A_log), B, C, state["ssm"])
        return self._output(y, x, z)[:, None], {"conv": window[:, :, 1:], "ssm": h}

    def state_size(self, seq_len: int) -> int:
        width = self.d_inner + 2 * self.d_state
        return width * (self.d_conv - 1) + self.d_inner * self.d_state


def _make(cfg: Mamba2Config, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return Mamba2Mixer(
        d_model, n_layers, d_state=cfg.d_state, n_heads=cfg.n_heads, expand=cfg.expand,
        d_conv=cfg.d_conv, chunk_size=cfg.chunk_size, impl=cfg.impl,
    )  # fmt: skip


VARIANT = register(
    Variant(
        name="mamba2",
        family="selective SSM (SSD)",
        version=1,
        papers=(
            "Transformers are SSMs: Generalized Models and Efficient Algorithms Through "
            "Structured State Space Duality",
        ),
        config_cls=Mamba2Config,
        make_mixer=_make,
        doc=__doc__,
    )
)
