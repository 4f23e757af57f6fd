"""Fast-vs-reference kernels and variant-specific checks of s4d, h3, hyena and mamba2.

The contract (step == forward, causality, state size, ...) is covered for every variant by
tests/test_architectures.py; here: FFT convolution vs direct convolution, the SSD chunked form vs
the sequential recurrence, each model's fast path vs its reference on outputs and gradients, and
configurations the shared tests do not build.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import architectures
from architectures import state_numel
from architectures._fftconv import causal_depthwise_conv, direct_conv_ref, fft_conv
from architectures.mamba2 import segsum, ssd_chunked, ssd_ref
from architectures.s4d import DiagonalSSM
from tests import models

SMALL = {"vocab_size": 31, "d_model": 32, "n_layers": 2, "d_state": 4}
T = 40
KERNEL_PATHS = [  # (name, fast path, reference path); tests/test_contract.py compares them
    ("s4d", "fft", "direct"),
    ("h3", "fft", "direct"),
    ("hyena", "fft", "direct"),
    ("mamba2", "chunked", "sequential"),
]


def small_model(name: str, **overrides: object) -> architectures.LanguageModel:
    return models.small_model(name, SMALL, **overrides)


def tokens(batch: int, length: int) -> torch.Tensor:
    return models.tokens(SMALL["vocab_size"], batch, length)


def outputs_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of fn(*inputs) and the gradients of a fixed random projection of them."""
    outputs = fn(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outputs)
    return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, inputs))


def assert_all_close(fast: list[torch.Tensor], ref: list[torch.Tensor]) -> None:
    for f, r in zip(fast, ref, strict=True):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel_len", [1, 5, 37, 50])
@pytest.mark.parametrize("kernel_lead", [(3,), (2, 3)], ids=["shared", "per-batch"])
def test_fft_conv_matches_direct_conv(kernel_len: int, kernel_lead: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 3, 37, generator=g).requires_grad_()
    k = (torch.randn(*kernel_lead, kernel_len, generator=g) / kernel_len**0.5).requires_grad_()
    assert_all_close(
        outputs_and_grads(fft_conv, [u, k]), outputs_and_grads(direct_conv_ref, [u, k])
    )


def test_direct_conv_is_the_causal_sum() -> None:
    u, k = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 10.0, 100.0]])
    expected = torch.tensor([[1.0, 12.0, 123.0, 234.0]])  # y_t = sum_s k_s u_{t-s}
    torch.testing.assert_close(direct_conv_ref(u, k), expected)
    torch.testing.assert_close(fft_conv(u, k), expected)


def test_fft_conv_runs_in_float32_and_keeps_the_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    u, k = torch.randn(1, 4, 16, generator=g).bfloat16(), torch.randn(4, 16, generator=g)
    y = fft_conv(u, k)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), fft_conv(u.float(), k), atol=1e-2, rtol=1e-2)
    u64, k64 = u.double(), k.double()  # float64 stays float64 (no float32 rounding)
    y64 = fft_conv(u64, k64)
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64, direct_conv_ref(u64, k64), atol=1e-12, rtol=1e-12)


def test_causal_depthwise_conv_matches_conv1d() -> None:
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 9, 5, generator=g), torch.randn(5, 3, generator=g), torch.randn(5)
    expected = F.conv1d(F.pad(x.transpose(1, 2), (2, 0)), w[:, None], b, groups=5).transpose(1, 2)
    torch.testing.assert_close(causal_depthwise_conv(x, w, b), expected)


def test_s4d_kernel_is_the_impulse_response_of_the_recurrence() -> None:
    torch.manual_seed(0)
    ssm = DiagonalSSM(3, 8, "inv")
    h = torch.zeros(1, 3, 4, dtype=torch.cfloat)
    impulse, response = torch.eye(20)[0], []
    for u in impulse:
        y, h = ssm.step(u.expand(1, 3), h)
        response.append(y[0])
    torch.testing.assert_close(torch.stack(response, -1), ssm.kernel(20), atol=1e-5, rtol=1e-4)


def test_segsum_is_masked_partial_sums() -> None:
    out = segsum(torch.tensor([1.0, 2.0, 3.0]))
    inf = float("-inf")
    expected = torch.tensor([[0.0, inf, inf], [2.0, 0.0, inf], [5.0, 3.0, 0.0]])
    torch.testing.assert_close(out, expected)


def _ssd_inputs(batch: int, length: int, heads: int, p: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, heads, p, generator=g)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g) - 1)
    A = -torch.rand(heads, generator=g) * 4 - 0.5
    B, C = torch.randn(2, batch, length, n, generator=g)
    h0 = torch.randn(batch, heads, p, n, generator=g)
    return [t.requires_grad_() for t in (x, dt, A, B, C, h0)]


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 64])
def test_ssd_chunked_matches_reference(chunk_size: int) -> None:
    inputs = _ssd_inputs(2, 37, 3, 4, 5)
    ref = outputs_and_grads(ssd_ref, inputs)
    fast = outputs_and_grads(lambda *a: ssd_chunked(*a, chunk_size=chunk_size), inputs)
    assert_all_close(fast, ref)


@pytest.mark.parametrize(("name", "fast", "reference"), KERNEL_PATHS)
def test_kernel_paths(name: str, fast: str, reference: str) -> None:
    assert small_model(name).kernel_path == fast
    assert small_model(name, impl="reference").kernel_path == reference


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("s4d", {"init": "inv", "d_state": 8}),
        ("h3", {"head_dim": 4}),
        ("hyena", {"order": 3, "d_conv": 2}),
        ("mamba2", {"chunk_size": 7, "n_heads": 2}),
    ],
)
@torch.no_grad()
def test_other_configs_step_equals_forward(name: str, config: dict) -> None:
    model = small_model(name, **config).eval()
    x = tokens(2, T)
    state, stepped = model.init_state(2), []
    for t in range(T):
        logits, state = model.step(x[:, t : t + 1], state)
        stepped.append(logits)
    assert (torch.cat(stepped, 1) - model(x)).abs().max().item() <= 1e-4
    assert model.state_size(T) == state_numel(state)


def test_state_sizes() -> None:
    d, n = SMALL["d_model"], SMALL["d_state"]
    assert small_model("s4d").state_size(T) == 2 * d * n
    h3 = small_model("h3", head_dim=2)
    assert h3.state_size(T) == 2 * (d * (n - 1) + d * 2 * n)
    mamba2 = small_model("mamba2")  # E = 64, conv over E + 2N channels, d_conv 4
    assert mamba2.state_size(T) == 2 * ((64 + 2 * n) * 3 + 64 * n)
    hyena = small_model("hyena", order=3)  # two long convolutions keep their inputs
    assert hyena.state_size(64) - hyena.state_size(32) == 2 * 2 * d * 32
    assert hyena.state_size(0) == 2 * 4 * d * 2  # (order + 1) D channels x (d_conv - 1)


def test_hyena_filter_does_not_depend_on_sequence_length() -> None:
    filt = small_model("hyena").blocks[0].mixer.filter
    long = filt(torch.arange(100, dtype=torch.float32))
    torch.testing.assert_close(filt(torch.arange(10, dtype=torch.float32)), long[..., :10])
    assert long.abs()[..., 90:].max() < long.abs()[..., :10].max()  # the window decays


@torch.no_grad()
def test_hyena_filter_table_follows_the_parameters() -> None:
    filt, cpu = small_model("hyena").blocks[0].mixer.filter, torch.device("cpu")
    before = filt.taps(10, cpu)
    torch.testing.assert_close(filt.taps(3, cpu), before[..., :3])
    torch.testing.assert_close(before, filt(torch.arange(10, dtype=torch.float32)))
    filt.mlp[-1].weight.mul_(2)  # as an optimizer step does, in place
    after = filt.taps(10, cpu)
    torch.testing.assert_close(after, 2 * before)


@pytest.mark.parametrize("name", ["s4d", "h3", "hyena", "mamba2"])
def test_bfloat16_forward_is_finite(name: str) -> None:
    model = small_model(name).to(torch.bfloat16)
    with torch.no_grad():
        logits = model(tokens(1, 24))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "config", "fragment"),
    [
        ("s4d", {"d_state": 5}, "'d_state' must be even"),
        ("h3", {"head_dim": 5}, "'head_dim' must divide d_model=64"),
        ("hyena", {"emb_dim": 3}, "'emb_dim' must be even"),
        ("mamba2", {"n_heads": 3}, "'n_heads' must divide expand * d_model = 128"),
    ],
)
def test_bad_config(name: str, config: dict, fragment: str) -> None:
    with pytest.raises(architectures.ConfigError, match=f"^{name}: .*{re.escape(fragment)}"):
        architectures.build(name, **config)
