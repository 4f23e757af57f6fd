"""Backbone axes (norm placement, experts, looping); the moe, mod, looped, block_state variants."""

from __future__ import annotations

import math

import pytest
import torch

import architectures
from architectures import ConfigError, state_numel
from architectures.backbone import MLP, MoE, balance_loss
from architectures.block_state import block_attention, block_attention_ref
from architectures.mod import capacity_route
from tests import models

VOCAB, T = 31, 40
SMALL = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2, "n_heads": 4, "chunk_size": 8,
         "d_state": 4}  # fmt: skip


def small_model(name: str, **overrides: object) -> architectures.LanguageModel:
    return models.small_model(name, SMALL, **overrides)


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return models.tokens(VOCAB, batch, length, seed)


@torch.no_grad()
def assert_step_matches_forward(model: architectures.LanguageModel, length: int = T) -> list:
    x = tokens(2, length)
    logits = model(x)
    state, stepped = model.init_state(2), []
    for t in range(length):
        out, state = model.step(x[:, t : t + 1], state)
        stepped.append(out)
    assert (torch.cat(stepped, dim=1) - logits).abs().max().item() <= 1e-4
    assert model.state_size(length) == state_numel(state)
    return state


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("position", ["pre", "post", "peri"])
@pytest.mark.parametrize("name", ["transformer", "mamba"])
def test_norm_position_step_matches_forward(name: str, position: str, norm: str) -> None:
    model = small_model(name, norm_position=position, norm=norm).eval()
    assert model.config["norm_position"] == position
    kind = torch.nn.LayerNorm if norm == "layernorm" else torch.nn.RMSNorm
    assert isinstance(model.blocks[0].norm1, kind)
    assert isinstance(model.norm, torch.nn.Identity if position == "post" else kind)
    assert (model.blocks[0].norm1_out is not None) == (position == "peri")
    assert_step_matches_forward(model)


class _Double(torch.nn.Module):
    """A stand-in mixer: f(x) = 2x + 1, so each placement gives a different, checkable output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + 1


@pytest.mark.parametrize("position", ["pre", "post", "peri"])
def test_norm_position_formulas(position: str) -> None:
    cfg = architectures.BackboneConfig(d_model=8, norm_position=position)
    block = architectures.backbone.Block(_Double(), cfg)
    block.mlp = _Double()
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(0))
    n = torch.nn.functional.layer_norm  # fresh LayerNorms have unit weight and zero bias

    def sub(h: torch.Tensor) -> torch.Tensor:
        if position == "pre":
            return h + (2 * n(h, (8,)) + 1)
        if position == "post":
            return n(h + 2 * h + 1, (8,))
        return h + n(2 * n(h, (8,)) + 1, (8,))

    torch.testing.assert_close(block(x), sub(sub(x)))


def test_norm_position_is_validated() -> None:
    with pytest.raises(ConfigError, match="'norm_position' must be one of pre, post, peri"):
        architectures.build("transformer", norm_position="sandwich")


def test_balance_loss_exact() -> None:
    uniform = torch.full((6, 4), 0.25)
    assert balance_loss(uniform, torch.tensor([[0], [1], [2], [3], [0], [1]])).item() == 1.0
    collapsed = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert balance_loss(collapsed, torch.tensor([[0], [0]])).item() == 2.0  # n * 1 * 1


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_dispatch_matches_dense_reference_with_gradients(top_k: int) -> None:
    torch.manual_seed(0)
    moe = MoE(8, 2, n_experts=3, top_k=top_k)
    x = torch.randn(2, 5, 8, requires_grad=True)

    def reference(x: torch.Tensor) -> torch.Tensor:  # every expert on every token, then gather
        probs = moe.router(x).softmax(-1)  # (B, T, n)
        weight, expert = probs.topk(top_k, dim=-1)
        if top_k > 1:
            weight = weight / weight.sum(-1, keepdim=True)
        every = torch.stack([mlp(x) for mlp in moe.experts], dim=2)  # (B, T, n, D)
        picked = every.gather(2, expert[..., None].expand(*expert.shape, 8))  # (B, T, k, D)
        return (picked * weight[..., None]).sum(2)

    results = []
    for fn in (moe, reference):
        y = fn(x)
        grads = torch.autograd.grad(y.sin().sum(), [x, *moe.parameters()])
        results.append([y, *grads])
    for fast, ref in zip(*results, strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_moe_aux_loss_and_active_params() -> None:
    dense, moe = small_model("transformer"), small_model("moe")
    dense(tokens(2, 8))
    assert dense.aux_loss.item() == 0.0
    assert dense.num_params(active=True) == dense.num_params()
    moe(tokens(2, 8))
    assert moe.aux_loss.dim() == 0 and moe.aux_loss.item() >= 1.0 - 1e-6  # 1 only if balanced
    moe.aux_loss.backward()
    assert moe.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    per_expert = sum(p.numel() for p in MLP(32, 4).parameters())
    idle = SMALL["n_layers"] * (4 - 2) * per_expert  # 2 of 4 experts unused per token
    assert moe.num_params() - moe.num_params(active=True) == idle
    assert moe.num_params() == sum(p.numel() for p in moe.parameters())


def test_moe_defaults_come_from_the_variant_and_yield_to_the_user() -> None:
    config = architectures.resolve_config("moe")
    assert (config["n_experts"], config["top_k"]) == (4, 2)
    assert architectures.resolve_config("transformer")["n_experts"] == 0
    assert architectures.resolve_config("moe", n_experts=0)["n_experts"] == 0
    dense = small_model("moe", n_experts=0)
    assert isinstance(dense.blocks[0].mlp, MLP)
    with pytest.raises(ConfigError, match="^moe: config key 'top_k' must be <= n_experts=4"):
        architectures.build("moe", top_k=5)


@pytest.mark.parametrize(("name", "top_k"), [("mamba", 1), ("mamba", 2), ("transformer", 2)])
def test_experts_on_any_mixer_decode_like_forward(name: str, top_k: int) -> None:
    model = small_model(name, n_experts=3, top_k=top_k, norm_position="peri").eval()
    assert isinstance(model.blocks[1].mlp, MoE)
    assert_step_matches_forward(model, 16)


def test_looped_shares_one_block_and_keeps_a_state_per_run() -> None:
    config = architectures.resolve_config("looped")
    assert (config["n_layers"], config["n_loops"]) == (1, 4)
    looped = small_model("looped", n_loops=4).eval()
    single = small_model("transformer", n_layers=1)
    assert len(looped.blocks) == 1
    assert looped.num_params() == single.num_params()
    state = assert_step_matches_forward(looped, 16)
    assert len(state) == 4
    assert looped.state_size(16) == 4 * single.state_size(16)


def test_looped_fixes_one_block() -> None:
    assert architectures.fixed_keys("looped") == {"n_layers": 1}
    assert architectures.fixed_keys("transformer") == {}
    assert architectures.resolve_config("looped", n_layers=1)["n_layers"] == 1  # same value: ok
    with pytest.raises(ConfigError, match=r"^looped: n_layers is fixed at 1 \(looped is one "
                                          r"shared block .*\); got 2$"):
        architectures.build("looped", n_layers=2)


@torch.no_grad()
def test_looped_once_is_the_transformer_and_a_stack_loops_in_order() -> None:
    x = tokens(2, 12)
    looped = small_model("looped", n_layers=1, n_loops=1)
    single = small_model("transformer", n_layers=1)
    torch.testing.assert_close(looped(x), single(x), atol=0, rtol=0)
    twice = small_model("transformer", n_layers=2, n_loops=2)  # any variant can loop a stack
    h = twice.embed(x)
    for block in [*twice.blocks, *twice.blocks]:
        h = block(h)
    torch.testing.assert_close(twice(x), twice.head(twice.norm(h)))


@pytest.mark.parametrize("capacity", [0.1, 0.5, 0.77, 1.0])
def test_mod_capacity_route_is_first_come_first_served(capacity: float) -> None:
    want = torch.rand(4, 50, generator=torch.Generator().manual_seed(0)) > 0.3
    routed = capacity_route(want, capacity)
    for row_want, row in zip(want.tolist(), routed.tolist(), strict=True):
        count = 0
        for t, (w, r) in enumerate(zip(row_want, row, strict=True)):
            assert r == (w and count < math.floor(capacity * (t + 1)))
            count += r
            assert count <= capacity * (t + 1)  # every prefix within capacity


def test_mod_routes_within_capacity_and_reports_it() -> None:
    model = small_model("mod", capacity=0.25).eval()
    assert model.compute_stats() == {}  # before any forward
    with torch.no_grad():  # router bias up: every token wants attention, capacity decides
        for block in model.blocks:
            block.mixer.router.bias.fill_(10.0)
    assert_step_matches_forward(model, 20)
    mixer = model.blocks[0].mixer
    routed = capacity_route(mixer._weight(torch.zeros(1, 20, SMALL["d_model"])) > 0.5, 0.25)
    assert routed.sum().item() == math.floor(0.25 * 20)
    assert model.compute_stats() == {"routed_fraction": pytest.approx(5 / 20)}
    assert small_model("transformer").compute_stats() == {}


@pytest.mark.parametrize("capacity", [0, 1.5, -0.5])
def test_mod_capacity_is_validated(capacity: float) -> None:
    with pytest.raises(ConfigError, match=r"^mod: config key 'capacity' must be in \(0, 1\]"):
        architectures.build("mod", capacity=capacity)


def _attention_inputs(length: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, length, 8, generator=g).requires_grad_() for _ in range(5)]


@pytest.mark.parametrize(("block_len", "length"), [(1, 13), (5, 23), (8, 24), (64, 37)])
def test_block_attention_matches_reference_with_gradients(block_len: int, length: int) -> None:
    inputs = _attention_inputs(length)
    inv_freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float32) / 8)
    results = []
    for fn in (block_attention, block_attention_ref):
        y = fn(*inputs, block_len, inv_freq)
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        results.append([y, *torch.autograd.grad((y * weights).sum(), inputs)])
    for fast, ref in zip(*results, strict=True):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)


def test_block_state_kernel_paths() -> None:
    assert small_model("block_state").kernel_path == "chunked+blockwise"
    assert small_model("block_state", impl="reference").kernel_path == "sequential+masked"


@pytest.mark.parametrize("length", [16, 21])
def test_block_state_keeps_only_the_current_block(length: int) -> None:
    model = small_model("block_state", block_len=8).eval()
    state = assert_step_matches_forward(model, length)
    assert state[0]["k"].shape[2] == length % 8 and set(state[0]) == {"k", "v", "conv", "ssm"}
    kv = 2 * SMALL["d_model"] * (length % 8)
    assert model.state_size(length) - model.state_size(0) == 2 * kv  # two layers
