"""Decode state at context L: constant for recurrent variants, linear in L for attention.

Checked on the analytic figure and on the tensors a model actually holds after L steps.
"""

from __future__ import annotations

import pytest
import torch

import architectures
from architectures import state_numel

CONSTANT_STATE = {"linear_attention", "mamba", "mamba2", "s4d", "h3", "retnet", "rwkv", "mlstm",
                  "gla", "lstm", "performer", "pool_mixer"}
RECURRENT = sorted(CONSTANT_STATE & set(architectures.names()))


def _model(name: str) -> architectures.LanguageModel:
    torch.manual_seed(0)
    keys = set(architectures.config_keys(name))
    cfg = {k: v for k, v in {"d_model": 32, "n_layers": 2, "vocab_size": 17}.items() if k in keys}
    return architectures.build(name, **cfg).eval()


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_state_bytes_do_not_grow_with_context(name: str) -> None:
    model = _model(name)
    assert 0 < model.state_bytes(8192, 1) <= 1.2 * model.state_bytes(512, 1)


def test_attention_state_bytes_grow_linearly() -> None:
    model = _model("transformer")
    assert model.state_bytes(8192, 1) == 16 * model.state_bytes(512, 1) > 0


@pytest.mark.parametrize("name", ["transformer", *RECURRENT[:3]])
@torch.no_grad()
def test_state_tensors_match_analytic_after_l_steps(name: str) -> None:
    model = _model(name)
    state = model.init_state(2)
    tokens = torch.randint(0, 17, (2, 1), generator=torch.Generator().manual_seed(0))
    for _ in range(96):
        _, state = model.step(tokens, state)
    assert state_numel(state) == model.state_size(96)
