"""retnet, gla, mlstm, rwkv, lstm: chunked kernels against their sequential references (outputs,
final states and gradients), stability of the stabilised kernels, and per-variant details."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures import ConfigError, state_numel
from architectures._decay_attention import decay_attention_chunked, decay_attention_ref
from architectures.mlstm import mlstm_chunked, mlstm_ref
from architectures.rwkv import wkv_chunked, wkv_ref
from tests import models

CHUNKED = ["retnet", "gla", "mlstm", "rwkv"]
SMALL = {"vocab_size": 31, "d_model": 32, "n_layers": 2, "n_heads": 4, "chunk_size": 8}
CHUNK_SIZES = [1, 5, 8, 64]  # one step, a ragged last chunk, even chunks, one chunk
T = 37


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_model(name: str, **overrides: object) -> architectures.LanguageModel:
    return models.small_model(name, SMALL, **overrides)


def _outputs_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Output, final state, and the gradients of a random projection of both w.r.t. `inputs`."""
    out, state = fn(*inputs)
    outputs = [out, *(state if isinstance(state, tuple) else (state,))]
    loss = sum(
        (o * torch.randn(o.shape, generator=_gen(i))).sum()
        for i, o in enumerate(outputs)
        if o.requires_grad  # the stabilisers (m, p) are detached in both forms
    )
    return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, inputs))


def _assert_all_close(ref: list[torch.Tensor], fast: list[torch.Tensor], tol: float) -> None:
    for i, (r, f) in enumerate(zip(ref, fast, strict=True)):
        torch.testing.assert_close(f, r, atol=tol, rtol=tol, msg=lambda m, i=i: f"item {i}: {m}")


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("decay_width", [1, 6], ids=["per-head", "per-key-dim"])
def test_decay_attention_chunked_matches_reference(chunk_size: int, decay_width: int) -> None:
    g = _gen()
    q, k, v = (torch.randn(2, 3, T, 6, generator=g) for _ in range(3))
    log_decay = F.logsigmoid(torch.randn(2, 3, T, decay_width, generator=g) * 3)
    state = torch.randn(2, 3, 6, 6, generator=g)
    inputs = [z.requires_grad_() for z in (q, k, v, log_decay, state)]
    ref = _outputs_and_grads(decay_attention_ref, inputs)
    fast = _outputs_and_grads(
        lambda *a: decay_attention_chunked(*a[:4], chunk_size, state=a[4]), inputs
    )
    _assert_all_close(ref, fast, 1e-4)


def _mlstm_inputs(gate_scale: float) -> list[torch.Tensor]:
    g = _gen(1)
    q, v = torch.randn(2, 2, T, 4, generator=g), torch.randn(2, 2, T, 4, generator=g)
    k = torch.randn(2, 2, T, 4, generator=g) / 2  # 1 / sqrt(head width), as the mixer scales
    log_f = F.logsigmoid(torch.randn(2, 2, T, generator=g) * 2 + 2)
    log_i = torch.randn(2, 2, T, generator=g) * gate_scale
    C, n = torch.randn(2, 2, 4, 4, generator=g), torch.randn(2, 2, 4, generator=g)
    m = torch.randn(2, 2, generator=g)
    return [z.requires_grad_() for z in (q, k, v, log_f, log_i, C, n)] + [m]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_mlstm_chunked_matches_reference(chunk_size: int) -> None:
    *inputs, m = _mlstm_inputs(gate_scale=3.0)  # input gates up to e^10: the stabiliser matters

    def ref(*a):
        return mlstm_ref(*a[:5], state=(a[5], a[6], m))

    def fast(*a):
        return mlstm_chunked(*a[:5], chunk_size, state=(a[5], a[6], m))

    _assert_all_close(_outputs_and_grads(ref, inputs), _outputs_and_grads(fast, inputs), 1e-4)


def _wkv_inputs(key_scale: float) -> list[torch.Tensor]:
    g = _gen(2)
    k = torch.randn(2, T, 5, generator=g) * key_scale
    v = torch.randn(2, T, 5, generator=g)
    w = -torch.exp(torch.linspace(-5.0, 3.0, 5))  # RWKV-4's range of decay speeds
    u = torch.randn(5, generator=g)
    a, b = torch.randn(2, 5, generator=g), torch.rand(2, 5, generator=g) + 0.5
    p = torch.randn(2, 5, generator=g)
    return [z.requires_grad_() for z in (k, v, w, u, a, b)] + [p]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_wkv_chunked_matches_reference(chunk_size: int) -> None:
    *inputs, p = _wkv_inputs(key_scale=5.0)  # keys up to ~e^15: the stabiliser matters

    def ref(*a):
        return wkv_ref(*a[:4], state=(a[4], a[5], p))

    def fast(*a):
        return wkv_chunked(*a[:4], chunk_size, state=(a[4], a[5], p))

    _assert_all_close(_outputs_and_grads(ref, inputs), _outputs_and_grads(fast, inputs), 1e-4)


def test_stabilised_kernels_stay_finite_where_plain_exponentials_overflow() -> None:
    *m_in, m = _mlstm_inputs(gate_scale=200.0)  # exp(200) is inf in float32
    *w_in, p = _wkv_inputs(key_scale=200.0)
    cases = [
        (lambda *a: mlstm_ref(*a[:5], state=(a[5], a[6], m)),
         lambda *a: mlstm_chunked(*a[:5], 8, state=(a[5], a[6], m)), m_in),
        (lambda *a: wkv_ref(*a[:4], state=(a[4], a[5], p)),
         lambda *a: wkv_chunked(*a[:4], 8, state=(a[4], a[5], p)), w_in),
    ]  # fmt: skip
    for ref_fn, fast_fn, inputs in cases:
        ref, fast = _outputs_and_grads(ref_fn, inputs), _outputs_and_grads(fast_fn, inputs)
        assert all(torch.isfinite(z).all() for z in ref + fast)
        torch.testing.assert_close(fast[0], ref[0], atol=1e-3, rtol=1e-3)


def test_kernel_paths() -> None:
    for name in CHUNKED:
        assert small_model(name).kernel_path == "chunked"
        assert small_model(name, impl="reference").kernel_path == "sequential"
    assert small_model("lstm").kernel_path == "aten_lstm"


@pytest.mark.parametrize(
    ("name", "per_layer"),
    [
        ("retnet", 4 * 8 * 8),  # H d_k d_v
        ("gla", 4 * 8 * 8),
        ("mlstm", 4 * (8 * 8 + 8 + 1)),  # H (C + n + m)
        ("rwkv", 4 * 32),  # previous x, numerator, denominator, max per channel
        ("lstm", 2 * 32),  # h, c
    ],
)
def test_state_size_formula(name: str, per_layer: int) -> None:
    model = small_model(name)
    assert model.state_size(1000) == 2 * per_layer == state_numel(model.init_state(3))


def test_lstm_with_expand_steps_like_forward() -> None:
    model = small_model("lstm", expand=2).eval()
    x = torch.randint(0, SMALL["vocab_size"], (2, 12), generator=_gen())
    state, steps = model.init_state(2), []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t : t + 1], state)
            steps.append(y)
        torch.testing.assert_close(torch.cat(steps, dim=1), model(x), atol=1e-5, rtol=1e-5)
    assert model.state_size(12) == state_numel(state) == 2 * 2 * (2 * 32)


def test_retnet_decays_follow_the_paper() -> None:
    mixer = small_model("retnet").blocks[0].mixer
    gammas = [1 - 2.0 ** (-5 - h) for h in range(4)]
    torch.testing.assert_close(mixer.log_gamma, torch.tensor([math.log(g) for g in gammas]))


@pytest.mark.parametrize("name", CHUNKED[:3])
def test_heads_must_divide_d_model(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: config key 'n_heads' must divide d_model=64"):
        architectures.build(name, n_heads=5)
