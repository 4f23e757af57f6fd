"""Attention-family variants: sliding_window, performer, linformer, pool_mixer.

The shared contract tests cover them too; these check what is particular to each: the blocked
window against a band-masked reference, FAVOR+ features, linformer's lack of decoding, pooling.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch

import architectures
from architectures import state_numel
from architectures.linear_attention import linear_attention_chunked, linear_attention_ref
from architectures.performer import favor_features, orthogonal_gaussian
from architectures.sliding_window import band_mask, sliding_window_blocked, sliding_window_ref
from tests import models

SMALL = {"vocab_size": 31, "d_model": 32, "n_layers": 2, "n_heads": 4, "chunk_size": 8}


def small_model(name: str, **overrides: object) -> architectures.LanguageModel:
    return models.small_model(name, SMALL, **overrides)


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return models.tokens(SMALL["vocab_size"], batch, length, seed)


def unroll(model: architectures.LanguageModel, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    state = model.init_state(x.shape[0])
    logits = []
    for tok in x.split(1, dim=1):
        step_logits, state = model.step(tok, state)
        logits.append(step_logits)
    return torch.cat(logits, dim=1), state


def outputs_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    out = fn(*inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return [out.detach(), *torch.autograd.grad((out * weight).sum(), inputs)]


def qkv(length: int, width: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, length, width, generator=g).requires_grad_() for _ in range(3)]


def test_kernel_paths() -> None:
    assert small_model("sliding_window").kernel_path == "blocked"
    assert small_model("sliding_window", impl="reference").kernel_path == "masked"
    assert small_model("performer").kernel_path == "chunked"
    assert small_model("performer", impl="reference").kernel_path == "sequential"
    assert small_model("linformer").kernel_path == "sdpa"
    assert small_model("pool_mixer").kernel_path == "cumsum"


# --- sliding_window ---


def test_band_mask() -> None:
    mask = band_mask(5, 2)
    assert mask.tolist()[3] == [False, False, True, True, False]
    assert band_mask(4, 10).equal(torch.ones(4, 4, dtype=torch.bool).tril())


@pytest.mark.parametrize(("length", "window"), [(37, 8), (32, 8), (37, 1), (5, 8), (16, 16)])
def test_sliding_window_blocked_matches_reference(length: int, window: int) -> None:
    inputs = qkv(length)
    ref = outputs_and_grads(lambda q, k, v: sliding_window_ref(q, k, v, window), inputs)
    fast = outputs_and_grads(lambda q, k, v: sliding_window_blocked(q, k, v, window), inputs)
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_sliding_window_steps_past_the_window_with_a_bounded_cache() -> None:
    model = small_model("sliding_window", window=8).eval()
    x = tokens(2, 40)
    stepped, state = unroll(model, x)
    assert (stepped - model(x)).abs().max().item() <= 1e-4
    assert all(layer["k"].shape[2] == 8 and layer.pos == 40 for layer in state)
    d, n_layers = SMALL["d_model"], SMALL["n_layers"]
    assert model.state_size(40) == state_numel(state) == n_layers * 2 * 8 * d
    assert model.state_size(5) == n_layers * 2 * 5 * d


@torch.no_grad()
def test_sliding_window_ignores_tokens_outside_the_window() -> None:
    model = small_model("sliding_window", window=4, n_layers=1).eval()
    x = tokens(1, 20)
    changed = x.clone()
    changed[:, 5] = (x[:, 5] + 1) % SMALL["vocab_size"]
    diff = (model(changed) - model(x)).abs().amax(-1)[0]  # (T,)
    assert diff[:5].max() == 0 and diff[5:9].min() > 0 and diff[9:].max() == 0


# --- performer ---


def test_orthogonal_gaussian_rows_are_orthogonal_within_blocks() -> None:
    torch.manual_seed(0)
    w = orthogonal_gaussian(12, 8)
    assert w.shape == (12, 8)
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)
    rows = torch.stack([orthogonal_gaussian(4, 4) for _ in range(2000)])  # (2000, 4, 4)
    assert rows.mean(0).abs().max() < 0.15  # Haar-distributed: no preferred direction


def test_favor_features_estimate_the_softmax_kernel() -> None:
    torch.manual_seed(0)
    d = 8
    w = orthogonal_gaussian(8192, d)
    q, k = torch.randn(2, 1, 1, 6, d) * 0.4  # (2, B, H, T, d); variance grows as exp(|q+k|^2)
    estimate = favor_features(q, w, stabilize=False) @ favor_features(k, w, stabilize=False).mT
    exact = torch.exp(q @ k.mT / math.sqrt(d))
    ratio = estimate / exact
    assert (ratio - 1).abs().max() < 0.1
    assert abs(ratio.mean().item() - 1) < 0.02  # unbiased (QR without the sign fix gives ~0.97)


@pytest.mark.parametrize("chunk_size", [1, 8, 64])
def test_performer_chunked_matches_reference_on_favor_features(chunk_size: int) -> None:
    torch.manual_seed(0)
    w = orthogonal_gaussian(16, 8)

    def attend(fn):
        def run(q, k, v):
            q, k = favor_features(q, w, stabilize=True), favor_features(k, w, stabilize=False)
            return fn(q, k, v)

        return run

    inputs = qkv(37)
    ref = outputs_and_grads(attend(linear_attention_ref), inputs)
    fast = outputs_and_grads(
        attend(lambda q, k, v: linear_attention_chunked(q, k, v, chunk_size)), inputs
    )
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-4)


def test_performer_features_are_a_seeded_buffer_and_state_is_flat() -> None:
    model = small_model("performer", n_features=16)
    mixer = model.blocks[0].mixer
    assert mixer.features.shape == (16, 8) and not mixer.features.requires_grad
    assert "blocks.0.mixer.features" in model.state_dict()
    assert not mixer.features.equal(model.blocks[1].mixer.features)
    assert mixer.features.equal(small_model("performer", n_features=16).blocks[0].mixer.features)
    assert model.state_size(1) == model.state_size(4096) == 2 * 4 * 16 * (8 + 1)


# --- linformer ---


def test_linformer_is_bidirectional_without_decoding() -> None:
    model = small_model("linformer").eval()
    assert not architectures.get("linformer").causal
    assert model.init_state(2) == [{}, {}] and model.state_size(100) == 0
    with pytest.raises(NotImplementedError, match="linformer is bidirectional"):
        model.step(tokens(2, 1), model.init_state(2))
    x = tokens(1, 12)
    changed = x.clone()
    changed[:, -1] = (x[:, -1] + 1) % SMALL["vocab_size"]
    with torch.no_grad():
        assert (model(changed)[:, 0] - model(x)[:, 0]).abs().max() > 0


def test_linformer_sequence_length_limit() -> None:
    model = small_model("linformer", k=4, max_seq_len=16)
    assert model.blocks[0].mixer.E.shape == (4, 16)
    assert model(tokens(2, 16)).shape == (2, 16, SMALL["vocab_size"])
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(tokens(2, 17))


# --- pool_mixer ---


def test_pool_mixer_is_cumulative_mean_minus_input() -> None:
    torch.manual_seed(0)
    mixer = small_model("pool_mixer").blocks[0].mixer
    x = torch.randn(2, 9, SMALL["d_model"])
    u = mixer.proj_in(x)
    expected = torch.stack([u[:, : t + 1].mean(1) - u[:, t] for t in range(9)], dim=1)
    torch.testing.assert_close(mixer(x), mixer.proj_out(expected), atol=1e-6, rtol=1e-5)
    assert mixer(x)[:, 0].abs().max() == 0  # the first token is its own mean
    backbone_keys = sorted(f.name for f in fields(architectures.BackboneConfig))
    assert architectures.config_keys("pool_mixer") == backbone_keys  # no mixer keys
    assert small_model("pool_mixer").state_size(10**6) == SMALL["n_layers"] * (SMALL["d_model"] + 1)
