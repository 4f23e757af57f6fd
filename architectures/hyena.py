"""Hyena operator: the input is projected to order + 1 streams (gates x_0 .. x_{order-1} and a
value v), each smoothed by a short causal depthwise convolution; then, for each gate from the last
to x_1, v = h_i * (x_i v) + b_i (x_i v) is a long causal convolution with an implicit filter h_i,
and the output x_0 v is projected out (order 2 = one long filter between two gates, as in the
reference implementation). Each filter is not stored but generated: a small MLP with sine
activations maps sinusoidal features of the position l to one tap per channel, times an
exponential decay window exp(-a_c l) whose rates span from a few to thousands of tokens, so the
filter is as long as the sequence, defined at every position, and costs parameters independent
of T. The parallel form applies it by FFT in O(T log T). Unlike an SSM the filter has no
recurrent form: decoding keeps each long convolution's whole input history, (order - 1) x D
numbers per token, plus the short convolution's last d_conv - 1 inputs, and evaluates the filter
at positions 0..t for each new token."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import IMPLS, ConfigError, Variant, choice, integer, register
from ._fftconv import causal_depthwise_conv, conv_window, fft_len
from .s4d import long_conv

__all__ = ["VARIANT", "HyenaConfig", "HyenaFilter", "HyenaMixer"]

# Shapes: B batch, T time, D model width, F filter MLP width, E positional features.

# Decay windows fall to 1e-2 after between FAST and SLOW tokens (log-spaced over channels), and
# the positional features have periods from 2 up to MAX_PERIOD tokens: fixed per-token scales,
# so that the filter at position l does not depend on the sequence length it is evaluated for.
FAST, SLOW, MAX_PERIOD = 8.0, 4096.0, 10_000.0


@dataclass(frozen=True)
class HyenaConfig:
    order: int = integer(2, minimum=2)  # gates; order - 1 long convolutions
    filter_dim: int = integer(16)  # F, width of the filter MLP
    emb_dim: int = integer(8, minimum=2)  # E, sin/cos positional features of the filter (even)
    d_conv: int = integer(3)  # short causal depthwise conv width
    impl: str = choice("fast", IMPLS)  # fast: FFT convolution; reference: direct convolution

    def check(self, d_model: int) -> None:
        if self.emb_dim % 2:
            raise ConfigError(
                f"config key 'emb_dim' must be even (sin, cos pairs); got {self.emb_dim}"
            )


class Sin(nn.Module):
    """sin(w x) with a learned frequency per unit, the filter MLP's activation (w starts at 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """Implicit filters: position l -> (n_filters, D) taps, `forward(positions)` -> (n, D, L)."""

    # the reference (safari's HyenaFilter, wd=0) does not decay the implicit filter, and the
    # per-channel skip b_i is a D-like term
    no_weight_decay = ("mlp", "bias")

    def __init__(self, d_model: int, n_filters: int, filter_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.n_filters, self.d_model = n_filters, d_model
        periods = torch.logspace(math.log10(2.0), math.log10(MAX_PERIOD), emb_dim // 2)
        self.register_buffer("freqs", 2 * math.pi / periods, persistent=False)  # (E/2,)
        rates = math.log(100.0) / torch.logspace(math.log10(FAST), math.log10(SLOW), d_model)
        self.register_buffer("rates", rates, persistent=False)  # (D,) per-token decay
        self.mlp = nn.Sequential(
            nn.Linear(emb_dim, filter_dim), Sin(filter_dim),
            nn.Linear(filter_dim, filter_dim), Sin(filter_dim),
            nn.Linear(filter_dim, n_filters * d_model, bias=False),
        )  # fmt: skip
        self.bias = nn.Parameter(torch.randn(n_filters, d_model))  # per-channel skip b_i
        self._cache: tuple[tuple, Tensor] | None = None  # see `taps`

    def forward(self, positions: Tensor) -> Tensor:
        """positions (L,) float32 -> taps (n_filters, D, L) in float32."""
        angles = positions[:, None] * self.freqs  # (L, E/2)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (L, E)
        taps = self.mlp(features.to(self.bias.dtype)).float()  # (L, n * D)
        window = torch.exp(-positions[:, None] * self.rates)  # (L, D), <= 1
        taps = taps.view(-1, self.n_filters, self.d_model) * window[:, None]
        return taps.permute(1, 2, 0)  # (n, D, L)

    def taps(self, length: int, device: torch.device) -> Tensor:
        """Taps (n_filters, D, length) at positions 0 .. length - 1.

        Without autograd they come from a table of a power-of-two length kept until a parameter
        changes: decoding would otherwise re-run the MLP over the whole history for every token
        (85% of a step at 16K tokens). The table is derived from weights, like them shared by all
        sequences, so it is not decoding state.
        """
        if torch.is_grad_enabled():
            return self(torch.arange(length, device=device, dtype=torch.float32))
        key = (device, *((p.data_ptr(), p._version, p.dtype) for p in self.parameters()))
        if self._cache is None or self._cache[0] != key or self._cache[1].shape[-1] < length:
            positions = torch.arange(fft_len(length), device=device, dtype=torch.float32)
            self._cache = (key, self(positions))
        return self._cache[1][..., :length]


class HyenaMixer(nn.Module):
    """Hyena operator (after HazyResearch/safari `hyena.py`).

    State {"conv": (B, (order+1) D, d_conv-1), "history": (B, order-1, D, t)}: the short conv's
    last inputs and every long convolution's inputs so far (oldest first).
    """

    def __init__(
        self, d_model: int, *, order: int, filter_dim: int, emb_dim: int, d_conv: int, impl: str
    ) -> None:
        super().__init__()
        self.d_model, self.order, self.d_conv = d_model, order, d_conv
        self.kernel_path = "fft" if impl == "fast" else "direct"
        width = (order + 1) * d_model
        self.in_proj = nn.Linear(d_model, width)
        self.short = nn.Conv1d(width, width, d_conv, groups=width)  # weight (W, 1, d_conv)
        self.filter = HyenaFilter(d_model, order - 1, filter_dim, emb_dim)
        self.out_proj = nn.Linear(d_model, d_model)

    def _long_convs(self, u: Tensor, history: list[Tensor] | None = None) -> Tensor:
        """Short conv output u (B, T, (order+1) D) -> output (B, T, D); each long convolution's
        input (B, D, T) is appended to `history` when given, in the order `step` keeps them."""
        t, d = u.shape[1], self.d_model
        *gates, v = u.transpose(1, 2).split(d, dim=1)  # order x (B, D, T), v (B, D, T)
        taps = self.filter.taps(t, u.device)  # (order-1, D, T)
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            if history is not None:
                history.append(v)
            v = long_conv(v, taps[i], self.kernel_path) + self.filter.bias[i, :, None] * v
        return self.out_proj((v * gates[0]).transpose(1, 2))  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        u = causal_depthwise_conv(self.in_proj(x), self.short.weight[:, 0], self.short.bias)
        return self._long_convs(u)

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the short conv's last d_conv - 1 inputs and every long convolution's
        input over the whole sequence, (B, order-1, D, T), which the pass forms anyway."""
        streams = self.in_proj(x)  # (B, T, (order+1) D)
        window = conv_window(streams, self.d_conv - 1)
        u = causal_depthwise_conv(streams, self.short.weight[:, 0], self.short.bias)
        history: list[Tensor] = []
        y = self._long_convs(u, history)
        return y, {"conv": window, "history": torch.stack(history, 1)}

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        kw = {"device": device, "dtype": dtype}
        d, n = self.d_model, self.order - 1
        return {
            "conv": torch.zeros(batch_size, (self.order + 1) * d, self.d_conv - 1, **kw),
            "history": torch.zeros(batch_size, n, d, 0, **kw),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        window = torch.cat([state["conv"], self.in_proj(x_t).transpose(1, 2)], dim=-1)
        u = (window * self.short.weight[:, 0]).sum(-1) + self.short.bias  # (B, (order+1) D)
        *gates, v = u.split(self.d_model, dim=1)  # (B, D) each
        t = state["history"].shape[-1]  # position of this token
        taps = self.filter.taps(t + 1, x_t.device).flip(-1)  # tap t-s meets input s
        inputs = []
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            inputs.append(v)
            past = torch.cat([state["history"][:, i], v[:, :, None]], dim=-1)  # (B, D, t+1)
            conv = (past.float() * taps[i]).sum(-1).to(v.dtype)
            v = conv + self.filter.bias[i] * v
        history = torch.cat([state["history"], torch.stack(inputs, 1)[..., None]], dim=-1)
        y = self.out_proj(v * gates[0])[:, None]  # (B, 1, D)
        return y, {"conv": window[:, :, 1:], "history": history}

    def state_size(self, seq_len: int) -> int:
        d = self.d_model
        return (self.order + 1) * d * (self.d_conv - 1) + (self.order - 1) * d * seq_len


def _make(cfg: HyenaConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return HyenaMixer(
        d_model, order=cfg.order, filter_dim=cfg.filter_dim, emb_dim=cfg.emb_dim,
        d_conv=cfg.d_conv, impl=cfg.impl,
    )  # fmt: skip


VARIANT = register(
    Variant(
        name="hyena",
        family="long convolution",
        version=1,
        papers=(
            "Hyena Hierarchy: Towards Larger Convolutional Language Models",
            "Multi-Dimensional Hyena for Spatial Inductive Bias",
            "Mamba-360: Survey of State Space Models as Transformer Alternatives for Long "
            "Sequence Modelling: Methods, Applications, and Challenges",
        ),
        config_cls=HyenaConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
