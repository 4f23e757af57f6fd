"""Pool mixer, the attention-free floor: PoolFormer's token mixer (average pooling minus the
input, from MetaFormer) made causal. The input is projected, each position takes the mean of all
positions up to and including itself and subtracts its own value, y_t = mean(u_1..u_t) - u_t,
and the result is projected out. It has no learned interaction between tokens beyond a running
average, so it marks what the shared backbone achieves with almost no sequence mixing. Decoding
keeps a running sum (D) and a token count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import Variant, register

__all__ = ["VARIANT", "PoolMixer", "PoolMixerConfig"]


@dataclass(frozen=True)
class PoolMixerConfig:
    """No mixer keys: the pooling has nothing to tune."""


class PoolMixer(nn.Module):
    """Causal cumulative mean pooling; state {"sum": (B, D), "count": int64 (B, 1)}."""

    kernel_path = "cumsum"

    def __init__(self, d_model: int, n_layers: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.proj_in = nn.Linear(d_model, d_model, bias=False)
        self.proj_out = nn.Linear(d_model, d_model, bias=False)
        nn.init.normal_(self.proj_in.weight, std=0.02)
        nn.init.normal_(self.proj_out.weight, std=0.02 / math.sqrt(2 * n_layers))

    def _mix(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """x (B, T, D) -> output (B, T, D) and the decoding state after the last token."""
        b, t, _ = x.shape
        u = self.proj_in(x)  # (B, T, D)
        count = torch.arange(1, t + 1, device=u.device, dtype=torch.float32)
        # summed in float32: a long cumulative sum in half precision drifts
        total = u.float().cumsum(1)
        state = {
            "sum": total[:, -1].to(u.dtype, copy=True),  # not a view pinning all of total
            "count": torch.full((b, 1), t, device=u.device, dtype=torch.long),
        }
        mean = (total / count[:, None]).to(u.dtype)
        del total  # freed before the output projection, as when forward did not keep it
        return self.proj_out(mean - u), state

    def forward(self, x: Tensor) -> Tensor:
        return self._mix(x)[0]

    def prefill(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward over x (B, T, D) in one parallel pass, plus the state that T `step` calls from
        `init_state` reach: the last row of the cumulative sum and the count T."""
        return self._mix(x)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        return {
            "sum": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
            # an integer count stays exact however long the context
            "count": torch.zeros(batch_size, 1, device=device, dtype=torch.long),
        }

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        u = self.proj_in(x_t[:, 0])  # (B, D)
        total, count = state["sum"] + u, state["count"] + 1
        y = (total / count).to(u.dtype) - u
        return self.proj_out(y)[:, None], {"sum": total, "count": count}  # (B, 1, D)

    def state_size(self, seq_len: int) -> int:
        return self.d_model + 1


def _make(cfg: PoolMixerConfig, d_model: int, layer_idx: int, n_layers: int) -> nn.Module:
    return PoolMixer(d_model, n_layers)


VARIANT = register(
    Variant(
        name="pool_mixer",
        family="attention-free floor",
        version=1,
        papers=("MetaFormer Is Actually What You Need for Vision",),
        config_cls=PoolMixerConfig,
        make_mixer=_make,
        doc=__doc__,
    )
)
