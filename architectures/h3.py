"""H3 (Hungry Hungry Hippos): projections q, k, v of the input; k passes a shift SSM, whose state
is a shift register of the last N inputs, so it is a learned causal filter of N taps that lets a
token see its recent predecessors; the product shift(k) * v (an outer product within each head of
head_dim channels) passes a diagonal complex SSM (S4D-Lin, ZOH) that carries it across the whole
sequence; the output q * SSM(shift(k) * v), summed over the head's key channels, is projected out.
The two SSMs give the layer what attention does in associative recall: remember a token after a
key, compare the key with a later query. Both SSMs are time-invariant, so the parallel form is two
FFT convolutions; decoding keeps the last N - 1 projected keys and the diagonal SSM state,
D (N - 1) + D head_dim N numbers per layer, constant in context length."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import IMPLS, ConfigError, Variant, choice, integer, register
from ._fftconv import conv_window
from .s4d import DiagonalSSM, as_complex, check_state, long_conv

__all__ = ["VARIANT", "H3Config", "H3Mixer"]

# Shapes: B batch, T time, D model width, H = D / P heads of P = head_dim channels, N state size.


@dataclass(frozen=True)
class H3Config:
    d_state: int = integer(64)  # N: shift-SSM taps and diagonal-SSM reals (N/2 complex modes)
    head_dim: int = integer(1)  # P; the diagonal SSM state is P x P x N per head (H3 uses 1)
    impl: str = choice("fast", IMPLS)  # fast: FFT convolution; reference: direct convolution

    def check(self, d_model: int) -> None:
        check_state(self.d_state)
        if d_model % self.head_dim:
            raise ConfigError(
                f"config key 'head_dim' must divide d_model={d_model}; got {self.head_dim}"
            )


class H3Mixer(nn.Module):
    """H3 layer (after HazyResearch/H3 `h3.py`).

    State {"k": (B, D, N-1), "h": (B, P, P, H, N/2, 2)}: "k" holds the last N - 1 projected keys
    (oldest first); "h" the diagonal SSM's complex modes as (real, imag) pairs.
    """

    # the skip; the diagonal SSM declares its own dynamics, and the shift SSM's taps are its
    # C (an ordinary weight, decayed as S4's C is)
    no_weight_decay = ("D",)

    def __init__(self, d_model: int, d_state: int, head_dim: int, impl: str) -> None:
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        self.kernel_path = "fft" if impl == "fast" else "direct"
        self.head_dim, self.n_heads = head_dim, d_model // head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        # shift SSM: A = shift, B = e_1, so its kernel is C itself, N taps (current input first)
        self.shift = nn.Parameter(torch.randn(d_model, d_state) * d_state**-0.5)
        self.ssm = DiagonalSSM(self.n_heads, d_state, "lin")
        self.D = nn.Parameter(torch.randn(self.n_heads))
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, z: Tensor) -> Tensor:
        """(B, T, D) -> (B, P, H, T), channel d = h P + p, so time is last for the convolutions."""
        b, t, _ = z.shape
        return z.view(b, t, self.n_heads, self.head_dim).permute(0, 3, 2, 1)

    def _heads_t(self, z: Tensor) -> Tensor:
        """One token: (B, D) -> (B, P, H)."""
        return z.view(z.shape[0], self.n_heads, self.head_dim).transpose(1, 2)

    def _streams(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D) -> projected keys (B, T, D), q (B, P, H, T) and the diagonal SSM's input
        shift(k) * v (B, P_k, P_v, H, T)."""
        keys = self.k_proj(x)
        q, k, v = (self._heads(z) for z in (self.q_proj(x), keys, self.v_proj(x)))
        shift = self.shift.view(self.n_heads, self.head_dim, -1).transpose(0, 1)  # (P, H, N)
        k = long_conv(k, shift, self.kernel_path)  # (B, P, H, T)
        return keys, q, k[:, :, None] * v[:, None]

    def _output(self, q: Tensor, kv: Tensor, kernel: Tensor) -> Tensor:
        """q * (diagonal SSM of kv with its kernel (H, T) + D kv), projected out: (B, T, D)."""
        b, t = kv.shape[0], kv.shape[-1]
        s = long_conv(kv, kernel, self.kernel_path) + self.D[:, None] * kv
        y = (q[:, :, None] * s).sum(1)  # (B, P_v, H, T), summed over key channels
        return self.out_proj(y.permute(0, 3, 2, 1).reshape(b, t, self.d_model))

    def forward(self, x: Tensor) -> Tensor:
        q, kv = self._streams(x)[1:]  # the keys are not kept past the short filter
        return self._output(q, kv, self.ssm.kernel(x.shape[1]))  # (B, T, D)

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the last N - 1 projected keys (zeros in front when T is shorter) and
        the diagonal SSM's state in closed form from its kernel's tables (forward skips it: it
        costs about as much as the kernel)."""
        keys, q, kv = self._streams(x)
        kernel, h = self.ssm.kernel_and_state(kv)  # h (B, P_k, P_v, H, N/2) complex
        state = {"k": conv_window(keys, self.d_state - 1), "h": torch.view_as_real(h).to(x.dtype)}
        return self._output(q, kv, kernel), state  # (B, T, D)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        p, kw = self.head_dim, {"device": device, "dtype": dtype}
        return {
            "k": torch.zeros(batch_size, self.d_model, self.d_state - 1, **kw),
            "h": torch.zeros(batch_size, p, p, self.n_heads, self.d_state // 2, 2, **kw),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x = x_t[:, 0]  # (B, D)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        window = torch.cat([state["k"], k[:, :, None]], dim=-1)  # (B, D, N), newest last
        k = (window * self.shift.flip(-1)).sum(-1)  # tap 0 meets the newest key
        kv = self._heads_t(k)[:, :, None] * self._heads_t(v)[:, None]  # (B, P_k, P_v, H)
        s, h = self.ssm.step(kv, as_complex(state["h"]))
        y = (self._heads_t(q)[:, :, None] * (s.to(x.dtype) + self.D * kv)).sum(1)  # (B, P_v, H)
        y = self.out_proj(y.transpose(1, 2).reshape(x.shape))
        h = torch.view_as_real(h).to(state["h"].dtype)
        return y[:, None], {"k": window[:, :, 1:], "h": h}  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.d_model * (self.d_state - 1) + self.d_model * self.head_dim * self.d_state


def _make(cfg: H3Config, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return H3Mixer(d_model, cfg.d_state, cfg.head_dim, cfg.impl)


VARIANT = register(
    Variant(
        name="h3",
        family="SSM + gating",
        version=1,
        papers=(
            "Hungry Hungry Hippos: Towards Language Modeling with State Space Models",
            "On the Parameterization and Initialization of Diagonal State Space Models",
        ),
        config_cls=H3Config,
        make_mixer=_make,
        doc=__doc__,
    )
)
