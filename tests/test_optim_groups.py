"""Weight-decay groups: every registered variant decays its weight matrices and nothing else."""

from __future__ import annotations

import pytest
import torch

import architectures
from architectures.mamba import MambaMixer

NAMES = architectures.names()
TINY = {"vocab_size": 11, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_state": 4,
        "chunk_size": 4, "max_seq_len": 16}  # fmt: skip
WD = 0.1


def tiny(name: str, **overrides: object) -> architectures.LanguageModel:
    """d_model 16 with the fewest layers the variant allows (2 where it mixes layer kinds)."""
    keys = set(architectures.config_keys(name)) - set(architectures.fixed_keys(name))
    config = {k: v for k, v in {**TINY, **overrides}.items() if k in keys}
    torch.manual_seed(0)
    return architectures.build(name, **config)


def declared(model: torch.nn.Module) -> set[str]:
    """Full names of every parameter some module lists in `no_weight_decay`."""
    params = dict(model.named_parameters())
    out = set()
    for prefix, module in model.named_modules():
        for rel in getattr(type(module), "no_weight_decay", ()):
            full = f"{prefix}.{rel}" if prefix else rel
            out |= {n for n in params if n == full or n.startswith(full + ".")}
    return out


@pytest.mark.parametrize("name", NAMES)
def test_groups_partition_parameters_by_the_rules(name: str) -> None:
    # two layers: hybrid and masformer then hold both of their layer kinds
    model = tiny(name, n_layers=1 if name == "looped" else 2)
    decay, no_decay = model.param_groups(WD)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (WD, 0.0)
    named = dict(model.named_parameters())
    for group in (decay, no_decay):
        assert len(group["names"]) == len(group["params"])
        assert all(named[n] is p for n, p in zip(group["names"], group["params"], strict=True))
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})  # once each
    kept = set(no_decay["names"])
    assert {n for n, p in named.items() if p.ndim < 2} <= kept
    assert "embed.weight" in kept
    assert declared(model) <= kept
    expected_decay = {n for n, p in named.items() if p.ndim >= 2} - {"embed.weight"} - declared(
        model)
    assert set(decay["names"]) == expected_decay
    assert "head.weight" in decay["names"]  # untied: an ordinary weight matrix


@pytest.mark.parametrize("name", ["transformer", "mamba", "moe"])
def test_adamw_takes_the_groups_and_leaves_undecayed_params_alone(name: str) -> None:
    model = tiny(name)
    opt = torch.optim.AdamW(model.param_groups(WD), lr=1e-2)
    assert [g["weight_decay"] for g in opt.param_groups] == [WD, 0.0]
    assert opt.param_groups[0]["names"]  # extra keys survive
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()  # no gradients at all: only weight decay can move a parameter
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n in opt.param_groups[0]["names"] and before[n].abs().sum() > 0), n


def test_mamba_and_s4d_dynamics_are_not_decayed() -> None:
    mamba = tiny("mamba").param_groups(WD)[1]["names"]
    assert {"blocks.0.mixer.A_log", "blocks.0.mixer.D", "blocks.0.mixer.dt_proj.bias"} <= set(
        mamba)
    assert tiny("mamba").blocks[0].mixer.A_log.ndim == 2  # a matrix, excluded by declaration
    s4d = set(tiny("s4d").param_groups(WD)[1]["names"])
    ssm = "blocks.0.mixer.ssm."
    assert {ssm + "log_dt", ssm + "log_A_real", ssm + "A_imag", "blocks.0.mixer.D"} <= s4d
    assert ssm + "C" not in s4d
    block_state = set(tiny("block_state").param_groups(WD)[1]["names"])
    assert "blocks.0.mixer.ssm.A_log" in block_state  # a nested mixer's declaration counts


def test_a_declared_name_that_matches_nothing_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MambaMixer, "no_weight_decay", ("A_log", "A_logg"))
    with pytest.raises(TypeError, match="MambaMixer.no_weight_decay names 'A_logg'"):
        tiny("mamba").param_groups(WD)


def test_shared_and_tied_parameters_are_counted_once() -> None:
    model = tiny("looped", n_loops=3)
    groups = model.param_groups(WD)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    tied = tiny("transformer")
    tied.head.weight = tied.embed.weight
    decay, no_decay = tied.param_groups(WD)
    assert "embed.weight" in no_decay["names"]
    assert all(p is not tied.embed.weight for p in decay["params"])
