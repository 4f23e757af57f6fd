"""Classic LSTM baseline: the sequence mixer of each block is a single-layer LSTM with hidden width
expand * d_model (input, forget and output gates and a cell state c_t = f_t c_{t-1} + i_t g_t,
h_t = o_t tanh(c_t)), projected back to d_model when expand != 1. It is the baseline of the
state-tracking papers: its nonlinear recurrence can track state (e.g. composing permutations)
that transformers and linear state-space layers cannot express at a fixed depth, but it cannot
be parallelised over time. Forward runs torch's fused LSTM (cuDNN on GPU, aten on CPU), a loop
over time inside the kernel; decoding steps the same weights one token at a time and keeps
(h, c): 2 x hidden elements, constant in context length. The forget-gate bias starts at 1
(Jozefowicz et al.)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import Variant, integer, register

__all__ = ["VARIANT", "LSTMConfig", "LSTMMixer"]


@dataclass(frozen=True)
class LSTMConfig:
    expand: int = integer(1)  # hidden width = expand * d_model; state 2 x hidden


class LSTMMixer(nn.Module):
    """One `nn.LSTM` layer (batch first) plus an output projection if expand != 1."""

    kernel_path = "aten_lstm"
    # the gate matrices are weights and decay, as in xLSTM's LSTM block; biases are 1-D
    no_weight_decay = ()

    def __init__(self, d_model: int, expand: int) -> None:
        super().__init__()
        self.hidden = expand * d_model
        self.lstm = nn.LSTM(d_model, self.hidden, batch_first=True)
        self.proj = nn.Linear(self.hidden, d_model, bias=False) if expand != 1 else nn.Identity()
        with torch.no_grad():  # gate order i, f, g, o: forget gate starts mostly open
            self.lstm.bias_ih_l0[self.hidden : 2 * self.hidden] = 1.0
            self.lstm.bias_hh_l0[self.hidden : 2 * self.hidden] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(x)  # (B, T, hidden)
        return self.proj(y)  # (B, T, D)

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one fused LSTM call, plus the state that T `step` calls
        from `init_state` reach: the (h, c) the kernel returns after the last token. The
        recurrence is nonlinear, so this is the kernel's loop over time, not a parallel scan."""
        y, (h, c) = self.lstm(x)  # (B, T, hidden); h, c (1, B, hidden)
        return self.proj(y), {"h": h[0], "c": c[0]}

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        zeros = torch.zeros(batch_size, self.hidden, device=device, dtype=dtype)
        return {"h": zeros, "c": zeros.clone()}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        # nn.LSTM wants (num_layers, B, hidden); the state keeps the batch dim first
        y, (h, c) = self.lstm(x_t, (state["h"][None], state["c"][None]))
        return self.proj(y), {"h": h[0], "c": c[0]}  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.hidden


def _make(cfg: LSTMConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return LSTMMixer(d_model, cfg.expand)


VARIANT = register(
    Variant(
        name="lstm",
        family="classic recurrent baseline",
        version=1,
        papers=(
            "Long Short-Term Memory",
            "The Illusion of State in State-Space Models",
        ),
        config_cls=LSTMConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
