"""A fix for transformers' RWKV single-token step with a batch of more than one sequence.

``RwkvSelfAttention.extract_key_value`` and ``RwkvFeedForward.forward`` take the previous
token from the state as a (B, D) tensor when the input has one token, and mix it with the
(B, 1, D) input: it broadcasts to (B, B, D) for B > 1 (transformers 5.24). These versions read
it as (B, 1, D); everything else is the library's code. `patch` binds them to a model's
modules (only the instances, never the library's classes).
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import Tensor, nn


def _shifted(module: Any, hidden: Tensor, state: Any, which: int) -> Tensor:
    if hidden.size(1) == 1 and state is not None:
        return state[which][:, :, module.layer_id].unsqueeze(1)  # (B, 1, D), not (B, D)
    shifted = module.time_shift(hidden)
    if state is not None:
        shifted[:, 0] = state[which][:, :, module.layer_id]
    return shifted


def _extract_key_value(self: Any, hidden: Tensor, state: Any = None) -> tuple[Any, ...]:
    shifted = _shifted(self, hidden, state, 1)
    key = hidden * self.time_mix_key + shifted * (1 - self.time_mix_key)
    value = hidden * self.time_mix_value + shifted * (1 - self.time_mix_value)
    receptance = hidden * self.time_mix_receptance + shifted * (1 - self.time_mix_receptance)
    key, value = self.key(key), self.value(value)
    receptance = torch.sigmoid(self.receptance(receptance))
    if state is not None:
        state[1][:, :, self.layer_id] = hidden[:, -1]
    return receptance, key, value, state


def _feed_forward(self: Any, hidden: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    shifted = _shifted(self, hidden, state, 0)
    key = hidden * self.time_mix_key + shifted * (1 - self.time_mix_key)
    receptance = hidden * self.time_mix_receptance + shifted * (1 - self.time_mix_receptance)
    value = self.value(torch.square(torch.relu(self.key(key))))
    receptance = torch.sigmoid(self.receptance(receptance))
    if state is not None:
        state[0][:, :, self.layer_id] = hidden[:, -1]
    return receptance * value, state


def patch(model: nn.Module) -> nn.Module:
    """Bind the fixed methods to every RWKV attention and feed-forward module of `model`."""
    for module in model.modules():
        kind = type(module).__name__
        if kind == "RwkvSelfAttention":
            module.extract_key_value = types.MethodType(_extract_key_value, module)
        elif kind == "RwkvFeedForward":
            module.forward = types.MethodType(_feed_forward, module)
    return model
