"""S4D, the diagonal state-space layer: every channel of the input runs its own linear
time-invariant SSM with N/2 complex modes, A = -exp(log_A_real) + i A_imag (S4D-Lin: -1/2 + i pi n;
S4D-Inv: -1/2 + i (N/pi)(N/(2n+1) - 1)), discretised by zero-order hold with a learned step dt,
h_t = exp(dt A) h_{t-1} + (exp(dt A) - 1)/A B u_t, y_t = 2 Re(C h_t) + D u_t (B is folded into C).
Because the system does not depend on the input, the whole layer is one convolution with the
kernel K_l = 2 Re(sum_n C_n (exp(dt A_n) - 1)/A_n exp(dt A_n l)), which the parallel form applies by
FFT in O(T log T); then GELU and a GLU output projection as in S4D. Decoding runs the recurrence,
keeping N/2 complex numbers (N reals) per channel: constant in context length."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import IMPLS, ConfigError, Variant, choice, integer, register
from ._fftconv import direct_conv_ref, fft_conv

__all__ = ["VARIANT", "DiagonalSSM", "S4DConfig", "S4DMixer", "check_state"]

# Shapes: B batch, T time, D model width (= channels here), N state size (N/2 complex modes).


def check_state(d_state: int) -> None:
    """N counts real numbers: N/2 complex modes (each paired with its conjugate), so N is even."""
    if d_state % 2:
        raise ConfigError(f"config key 'd_state' must be even (N/2 complex modes); got {d_state}")


@dataclass(frozen=True)
class S4DConfig:
    d_state: int = integer(64)  # N reals per channel = N/2 complex modes; must be even
    init: str = choice("lin", ("lin", "inv"))  # S4D-Lin or S4D-Inv imaginary parts of A
    impl: str = choice("fast", IMPLS)  # fast: FFT convolution; reference: direct convolution

    def check(self, d_model: int) -> None:
        check_state(self.d_state)


class DiagonalSSM(nn.Module):
    """C channels of diagonal complex SSMs with ZOH; also used by h3.

    `kernel(T)` gives the convolution kernel (C, T); `step` runs the recurrence on a state
    (..., C, N/2) complex. C is folded into the input map: the state is C * h, so y = 2 Re(sum).
    """

    # S4's `register(...)` gives A and dt weight decay 0; C is an ordinary weight
    no_weight_decay = ("log_dt", "log_A_real", "A_imag")

    def __init__(
        self, channels: int, d_state: int, init: str = "lin", dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:  # fmt: skip
        super().__init__()
        half = d_state // 2
        n = torch.arange(half, dtype=torch.float32)
        if init == "lin":
            imag = math.pi * n
        else:
            imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (C,)
        self.log_A_real = nn.Parameter(torch.full((channels, half), math.log(0.5)))
        self.A_imag = nn.Parameter(imag.repeat(channels, 1))  # (C, N/2)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(channels, half, dtype=torch.cfloat)))

    def discrete(self) -> tuple[Tensor, Tensor]:
        """(dt A, W) both (C, N/2) complex: decay exp(dt A) and input map W = C (e^{dt A} - 1)/A."""
        # in float32 whatever the parameters' dtype: complex half precision is not supported
        A = torch.complex(-torch.exp(self.log_A_real.float()), self.A_imag.float())
        dtA = torch.exp(self.log_dt.float())[:, None] * A
        return dtA, torch.view_as_complex(self.C.float()) * torch.expm1(dtA) / A

    def _tables(self, length: int) -> tuple[Tensor, Tensor]:
        """z^j (C, N/2, s) and W z^(i s) (C, N/2, ceil(T/s)) for T = length, s ~ sqrt(T): every
        l < T is l = i s + j, so z^l comes from one entry of each (see `kernel`)."""
        dtA, W = self.discrete()
        s = max(1, math.isqrt(length))
        rows = -(-length // s)
        pos = torch.arange(max(rows, s), device=dtA.device, dtype=torch.float32)
        inner = torch.exp(dtA[:, :, None] * pos[:s])  # (C, N/2, s): z^j
        outer = W[:, :, None] * torch.exp(dtA[:, :, None] * (pos[:rows] * s))  # W z^(i s)
        return inner, outer

    def kernel(self, length: int) -> Tensor:
        """K (C, T) in float32: K_l = 2 Re(sum_n W_n z_n^l) with z = exp(dt A), |z| < 1.

        Writing l = i s + j with s ~ sqrt(T), z^l = z^(i s) z^j, so K is one complex matmul per
        channel of (T/s, N/2) by (N/2, s) tables: T N/2 multiply-adds but only (T/s + s) N/2
        complex exponentials (the exponentials, not the sums, dominate a direct Vandermonde).
        """
        return self._kernel(*self._tables(length), length)

    @staticmethod
    def _kernel(inner: Tensor, outer: Tensor, length: int) -> Tensor:
        k = outer.transpose(1, 2) @ inner  # (C, T/s, s) complex
        return 2 * k.real.flatten(1)[:, :length]

    def kernel_and_state(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """For u (..., C, T): the kernel K (C, T) as `kernel(T)` gives it, and the state (..., C,
        N/2) complex64 that T `step` calls from zeros reach, in closed form from the same tables.

        The state is h = sum_l W z^l u_{T-1-l}. With l = i s + j it is sum_i W z^(i s) (sum_j z^j
        u_{T-1-i s-j}): a real matmul of the time-reversed input, cut in rows of s steps, with the
        z^j table, then a weighted sum over the T/s rows. O(T N) work, no loop over time.
        """
        t = u.shape[-1]
        inner, outer = self._tables(t)
        (c, half, s), rows = inner.shape, outer.shape[-1]
        # u_{T-1-l} at [.., i, j]: (..., C, T/s, s), zeros past the first input
        back = F.pad(u.float().flip(-1), (0, rows * s - t)).unflatten(-1, (rows, s))
        table = torch.view_as_real(inner).permute(0, 2, 1, 3).reshape(c, s, 2 * half)  # (C, s, N)
        partial = torch.view_as_complex((back @ table).unflatten(-1, (half, 2)))  # (.., T/s, N/2)
        return self._kernel(inner, outer, t), (partial * outer.transpose(1, 2)).sum(-2)

    def step(self, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """u (..., C) real, h (..., C, N/2) complex -> y (..., C) float32, new h."""
        dtA, W = self.discrete()
        h = torch.exp(dtA) * h + W * u.float()[..., None]
        return 2 * h.real.sum(-1), h


def long_conv(u: Tensor, k: Tensor, path: str) -> Tensor:
    """Causal convolution of u (..., T) with k (..., T): by FFT (path "fft") or directly
    (path "direct")."""
    return fft_conv(u, k) if path == "fft" else direct_conv_ref(u, k)


def as_complex(h: Tensor) -> Tensor:
    """A state stored as reals (..., 2) in any dtype -> complex64 (..., )."""
    return torch.view_as_complex(h.float().contiguous())


class S4DMixer(nn.Module):
    """S4D layer (after state-spaces/s4 `s4d.py`): SSM conv + D skip, GELU, Linear + GLU.

    State {"h": (B, D, N/2, 2)}: the complex modes stored as (real, imag) pairs.
    """

    no_weight_decay = ("D",)  # the skip; the SSM's dynamics are declared by DiagonalSSM

    def __init__(self, d_model: int, d_state: int, init: str, impl: str) -> None:
        super().__init__()
        check_state(d_state)
        self.d_model, self.d_state = d_model, d_state
        self.kernel_path = "fft" if impl == "fast" else "direct"
        self.ssm = DiagonalSSM(d_model, d_state, init)
        self.D = nn.Parameter(torch.randn(d_model))
        self.out = nn.Linear(d_model, 2 * d_model)  # then GLU back to D

    def _output(self, y: Tensor) -> Tensor:
        return F.glu(self.out(F.gelu(y)), dim=-1)

    def _convolve(self, u: Tensor, k: Tensor) -> Tensor:
        """u (B, D, T) and the SSM kernel k (D, T) -> output (B, T, D)."""
        y = long_conv(u, k, self.kernel_path) + self.D[:, None] * u
        return self._output(y.transpose(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        u = x.transpose(1, 2)  # (B, D, T)
        return self._convolve(u, self.ssm.kernel(x.shape[1]))  # (B, T, D)

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach, in closed form from the kernel's tables of decay powers (forward
        skips it: it costs about as much as the kernel)."""
        u = x.transpose(1, 2)  # (B, D, T)
        k, h = self.ssm.kernel_and_state(u)
        return self._convolve(u, k), {"h": torch.view_as_real(h).to(x.dtype)}

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        shape = (batch_size, self.d_model, self.d_state // 2, 2)
        return {"h": torch.zeros(shape, device=device, dtype=dtype)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = x_t[:, 0]  # (B, D)
        y, h = self.ssm.step(u, as_complex(state["h"]))
        y = y.to(u.dtype) + self.D * u
        return self._output(y)[:, None], {"h": torch.view_as_real(h).to(state["h"].dtype)}

    def state_size(self, seq_len: int) -> int:
        return self.d_model * self.d_state


def _make(cfg: S4DConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return S4DMixer(d_model, cfg.d_state, cfg.init, cfg.impl)


VARIANT = register(
    Variant(
        name="s4d",
        family="SSM (time-invariant)",
        version=1,
        papers=("On the Parameterization and Initialization of Diagonal State Space Models",),
        config_cls=S4DConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
