"""Mamba-1 selective state-space mixer: the input is projected to a gate z and a stream x that
passes a short causal depthwise convolution and SiLU; x then sets its own step size dt (softplus)
and input/output maps B, C, which drive a diagonal recurrence h_t = exp(dt_t A) h_{t-1} +
dt_t B_t x_t, y_t = C_t h_t + D x_t with A = -exp(A_log) (S4D-real init), gated by SiLU(z).
Decoding keeps d_conv - 1 inputs and a D_inner x N state: constant in context length. The
parallel form is a chunked scan with a hand-written backward; a sequential reference sits
beside it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from ._common import IMPLS, Variant, choice, integer, register
from ._fftconv import conv_window

__all__ = ["VARIANT", "MambaConfig", "MambaMixer", "selective_scan_chunked", "selective_scan_ref"]

# Shapes: B batch, T time, E = D_inner = expand * d_model channels of the scan, N state size.

# Elements in one (chunk, B, N, E) buffer of the chunked scan at most: 4 MiB in float32 stays in
# cache. On the 2-core dev machine this made a B=64 training step ~25% faster than chunks of 32
# (4x larger buffers), while prefill at B=1..8 keeps chunks of 32, ~25% faster than chunks of 8.
TILE = 1 << 20


@dataclass(frozen=True)
class MambaConfig:
    d_state: int = integer(16)  # N, state size per channel
    d_conv: int = integer(4)  # causal depthwise conv width
    expand: int = integer(2)  # D_inner = expand * d_model
    dt_rank: int = integer(0, minimum=0)  # rank of the dt projection; 0 means ceil(d_model / 16)
    chunk_size: int = integer(32)  # most time steps per chunk of the chunked scan (speed only)
    impl: str = choice("fast", IMPLS)  # fast: the chunked scan; reference: the sequential one


def _ssm_step(
    x_t: Tensor, dt_t: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """One step: x_t, dt_t (B, E); A (E, N); B_t, C_t (B, N); h (B, E, N) -> y_t (B, E), h."""
    h = torch.exp(dt_t[:, :, None] * A) * h + (dt_t * x_t)[:, :, None] * B_t[:, None, :]
    return (h @ C_t[:, :, None]).squeeze(-1), h


def selective_scan_ref(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference scan, one time step at a time.

    x, dt (B, T, E); A (E, N); B, C (B, T, N); D (E); h0 (B, E, N) or zeros -> y (B, T, E), h_T.
    """
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if h0 is None else h0
    ys = []
    # unbind first: indexing x[:, t] on a grad-requiring tensor makes backward quadratic in T
    for x_t, dt_t, B_t, C_t in zip(
        x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1), strict=True
    ):
        y_t, h = _ssm_step(x_t, dt_t, A, B_t, C_t, h)
        ys.append(y_t)
    return torch.stack(ys, dim=1) + D * x, h


class _Seq(NamedTuple):
    """Scan inputs, time-major: X, DT, DTX = dt * x (T, B, E); B, C (T, B, N); AT = A^T (N, E)."""

    X: Tensor
    DT: Tensor
    DTX: Tensor
    B: Tensor
    C: Tensor
    AT: Tensor


def _chunks(length: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, length)) for s in range(0, length, size)]


def _time_major(z: Tensor) -> Tensor:
    return z.transpose(0, 1).contiguous()  # (B, T, .) <-> (T, B, .)


def _chunk_states(seq: _Seq, s: int, end: int, dA: Tensor, H: Tensor) -> None:
    """Fill dA[:l] = exp(dt A) and H[1:l+1] with the states of steps s..end-1; H[0] is the start.

    Buffers dA (L, B, N, E), H (L+1, B, N, E); the state is stored (N, E) so that every
    contraction is a row-vector @ matrix bmm, the fast case on CPU. dt >= 0 and A < 0, so every
    exponent is <= 0 and the recurrence only ever shrinks the carried state: stable.
    """
    n = end - s
    torch.mul(seq.DT[s:end, :, None, :], seq.AT, out=dA[:n]).exp_()
    torch.mul(seq.B[s:end, :, :, None], seq.DTX[s:end, :, None, :], out=H[1 : n + 1])  # dt B x
    for i in range(n):  # in place, no allocation: h_i = dA_i * h_{i-1} + dt_i B_i x_i
        H[i + 1].addcmul_(dA[i], H[i])


def _chunk_backward(
    seq: _Seq, GY: Tensor, s: int, end: int, bufs: tuple[Tensor, Tensor, Tensor], carry: Tensor,
    grads: dict[str, Tensor],
) -> Tensor:  # fmt: skip
    """Gradients of steps s..end-1 given their recomputed dA and H; returns dL/dh at step s - 1.

    G_i = dL/dh_i = C_i gy_i + dA_{i+1} G_{i+1}; then gC = gy . h, gB = (dt x) . G,
    g(dt x) = B . G and g(dt A) = G * h_{i-1} * dA, which feeds dt (times A) and A (times dt).
    H is overwritten as scratch. GY (T, B, E); carry = dL/dh_{end-1} from the later chunks.
    """
    dA, H, G = bufs
    length, (_, b, n, e) = end - s, H.shape
    m = length * b
    Gl, dAl, h_prev = G[:length], dA[:length], H[:length]
    torch.mul(seq.C[s:end, :, :, None], GY[s:end, :, None, :], out=Gl)
    Gl[length - 1] += carry
    for i in range(length - 2, -1, -1):
        Gl[i].addcmul_(dAl[i + 1], Gl[i + 1])
    carry = dAl[0] * Gl[0]
    G_t = Gl.view(m, n, e).transpose(1, 2)  # (m, E, N) view
    h = H[1 : length + 1].view(m, n, e).transpose(1, 2)
    torch.bmm(GY[s:end].view(m, 1, e), h, out=grads["C"][s:end].view(m, 1, n))
    torch.bmm(seq.DTX[s:end].view(m, 1, e), G_t, out=grads["B"][s:end].view(m, 1, n))
    g_dtx = torch.bmm(seq.B[s:end].view(m, 1, n), Gl.view(m, n, e)).view(length, b, e)
    g_log = h_prev.mul_(Gl).mul_(dAl)  # dL/d(dt A), (l, B, N, E)
    grads["AT"] += torch.mul(g_log, seq.DT[s:end, :, None, :], out=dAl).sum((0, 1))
    torch.sum(g_log.mul_(seq.AT), dim=2, out=grads["dt"][s:end])
    grads["dt"][s:end].addcmul_(g_dtx, seq.X[s:end])
    torch.mul(g_dtx, seq.DT[s:end], out=grads["x"][s:end])
    return carry


class _SelectiveScan(torch.autograd.Function):
    """The scan, chunk by chunk, with a hand-written backward that recomputes each chunk's states.

    Only the state at each chunk start is kept, so memory is O(T (E + N) + L E N), not O(T E N),
    and every big buffer is written in place: on CPU, allocation and memory passes set the speed.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
        h0: Tensor | None, size: int,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        X, DT = _time_major(x), _time_major(dt)  # (T, B, E)
        seq = _Seq(X, DT, DT * X, _time_major(B), _time_major(C), A.t().contiguous())
        (t, b, e), n, size = X.shape, A.shape[1], min(size, x.shape[1])
        dA, H = X.new_empty(size, b, n, e), X.new_empty(size + 1, b, n, e)
        chunks = _chunks(t, size)
        # the state before each chunk, kept for backward only when a gradient is wanted
        starts = X.new_empty(len(chunks), b, n, e) if any(ctx.needs_input_grad) else None
        Y = X.new_empty(t, b, e)
        H[0] = 0 if h0 is None else h0.transpose(1, 2)
        for c, (s, end) in enumerate(chunks):
            m = (end - s) * b
            if starts is not None:
                starts[c] = H[0]
            _chunk_states(seq, s, end, dA, H)
            h = H[1 : end - s + 1].view(m, n, e)
            torch.bmm(seq.C[s:end].view(m, 1, n), h, out=Y[s:end].view(m, 1, e))  # y = C h
            H[0] = H[end - s]
        if starts is not None:
            ctx.save_for_backward(*seq, starts)
        ctx.size, ctx.has_h0 = size, h0 is not None  # type: ignore[attr-defined]
        return Y.transpose(0, 1), H[0].transpose(1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Tensor, gh: Tensor | None) -> tuple[Tensor | None, ...]:
        *saved, starts = ctx.saved_tensors
        seq = _Seq(*saved)
        (t, b, e), n, size = seq.X.shape, seq.AT.shape[0], ctx.size
        bufs = (
            seq.X.new_empty(size, b, n, e),  # dA
            seq.X.new_empty(size + 1, b, n, e),  # H
            seq.X.new_empty(size, b, n, e),  # G
        )
        grads = {
            "x": torch.empty_like(seq.X),
            "dt": torch.empty_like(seq.X),
            "B": torch.empty_like(seq.B),
            "C": torch.empty_like(seq.C),
            "AT": torch.zeros_like(seq.AT),  # accumulated over chunks
        }
        carry = torch.zeros_like(starts[0]) if gh is None else gh.transpose(1, 2)
        GY = _time_major(gy)
        for c, (s, end) in reversed(list(enumerate(_chunks(t, size)))):
            bufs[1][0] = starts[c]
            _chunk_states(seq, s, end, bufs[0], bufs[1])
            carry = _chunk_backward(seq, GY, s, end, bufs, carry, grads)
        gh0 = carry.transpose(1, 2) if ctx.has_h0 else None
        tm = _time_major
        gx, gdt, gB, gC = tm(grads["x"]), tm(grads["dt"]), tm(grads["B"]), tm(grads["C"])
        return gx, gdt, grads["AT"].t(), gB, gC, gh0, None


def selective_scan_chunked(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Same result and gradients as `selective_scan_ref`, chunk by chunk with in-place buffers.

    x, dt (B, T, E); A (E, N); B, C (B, T, N); D (E); h0 (B, E, N) or zeros -> y (B, T, E), h_T.
    A chunk holds at most `chunk_size` steps and at most TILE elements per buffer, so a large
    batch gets shorter chunks. Runs in float32 when given lower precision (as Mamba's kernel
    keeps its state in float32); float64 stays float64.
    """
    dtype = x.dtype
    work = torch.promote_types(dtype, torch.float32)
    size = max(1, min(chunk_size, TILE // (x.shape[0] * A.numel())))
    inputs = [z.to(work) for z in (x, dt, A, B, C)]
    y, h = _SelectiveScan.apply(*inputs, None if h0 is None else h0.to(work), size)
    return (y + D * x).to(dtype), h.to(dtype)


class MambaMixer(nn.Module):
    """Mamba-1 block (after state-spaces/mamba `mamba_simple.py`); state {"conv", "ssm"}."""

    # dynamics, not weights: mamba_simple marks A_log and D `_no_weight_decay`; the dt bias
    # sets the step size (1-D, so undecayed anyway)
    no_weight_decay = ("A_log", "D", "dt_proj.bias")

    def __init__(
        self, d_model: int, n_layers: int, *, d_state: int, d_conv: int, expand: int, dt_rank: int,
        chunk_size: int, impl: str,
    ) -> None:  # fmt: skip
        super().__init__()
        e, self.d_state, self.d_conv = expand * d_model, d_state, d_conv
        self.d_inner, self.dt_rank = e, dt_rank or math.ceil(d_model / 16)
        self.chunk_size = chunk_size
        self.kernel_path = "chunked" if impl == "fast" else "sequential"
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv = nn.Conv1d(e, e, d_conv, groups=e)  # weight (E, 1, d_conv) + bias; see _conv
        self.x_proj = nn.Linear(e, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, e)
        self.out_proj = nn.Linear(e, d_model, bias=False)
        self.A_log = nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(e, 1)
        )
        self.D = nn.Parameter(torch.ones(e))
        self._init_dt()
        with torch.no_grad():  # residual-branch output scaled by depth, as Mamba's MixerModel does
            self.out_proj.weight /= math.sqrt(2 * n_layers)

    def _init_dt(self, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
        """dt_proj as in Mamba: softplus(bias) log-uniform in [dt_min, dt_max]."""
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, E) after conv -> dt (B, T, E), A (E, N), B, C (B, T, N)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), -torch.exp(self.A_log), B, C

    def _conv(self, x: Tensor) -> Tensor:
        """Causal depthwise conv on (B, T, E) as shifted multiply-adds (beats conv1d on CPU)."""
        t, k = x.shape[1], self.d_conv
        padded = F.pad(x, (0, 0, k - 1, 0))  # (B, k-1+T, E)
        w = self.conv.weight[:, 0]  # (E, k)
        y = torch.addcmul(self.conv.bias, padded[:, k - 1 :], w[:, k - 1])
        for i in range(k - 1):
            y = torch.addcmul(y, padded[:, i : i + t], w[:, i])
        return y

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the decoding state after the last token."""
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        x = F.silu(self._conv(u))
        dt, A, B, C = self._ssm_inputs(x)
        if self.kernel_path == "chunked":
            y, h = selective_scan_chunked(x, dt, A, B, C, self.D, chunk_size=self.chunk_size)
        else:
            y, h = selective_scan_ref(x, dt, A, B, C, self.D)
        state = {"conv": conv_window(u, self.d_conv - 1), "ssm": h}
        return self.out_proj(y * F.silu(z)), state  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the conv's last d_conv - 1 inputs and the scan's final carry."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        return {
            "conv": torch.zeros(
                batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype
            ),
            "ssm": torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, z = self.in_proj(x_t[:, 0]).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat([state["conv"], x[:, :, None]], dim=-1)  # (B, E, d_conv)
        x = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)
        dt, A, B, C = self._ssm_inputs(x)
        y, h = _ssm_step(x, dt, A, B, C, state["ssm"])
        y = (y + self.D * x) * F.silu(z)
        return self.out_proj(y)[:, None], {"conv": window[:, :, 1:], "ssm": h}  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.d_inner * (self.d_conv - 1) + self.d_inner * self.d_state


def _make(cfg: MambaConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return MambaMixer(
        d_model, n_layers, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
        dt_rank=cfg.dt_rank, chunk_size=cfg.chunk_size, impl=cfg.impl,
    )  # fmt: skip


VARIANT = register(
    Variant(
        name="mamba",
        family="selective SSM",
        version=1,
        papers=("Mamba: Linear-Time Sequence Modeling with Selective State Spaces",),
        config_cls=MambaConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
