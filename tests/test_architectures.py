"""Contract tests shared by every registered architecture, plus the fast-vs-reference kernels."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
import torch

import architectures
from architectures import ConfigError, state_numel
from architectures import mamba as mamba_module
from architectures.linear_attention import (
    feature_map,
    linear_attention_chunked,
    linear_attention_ref,
)
from architectures.mamba import selective_scan_chunked, selective_scan_ref
from architectures.registry import RegistryError

NAMES = architectures.names()
# bidirectional variants (causal = False) have no token-by-token decoding to check
CAUSAL = [n for n in NAMES if architectures.get(n).causal]
T = 40  # crosses several chunk boundaries at chunk_size 8
SMALL = {
    "vocab_size": 31,
    "d_model": 32,
    "n_layers": 2,
    "n_heads": 4,
    "chunk_size": 8,
    "d_state": 4,
}


def small_config(name: str, **overrides: object) -> dict[str, object]:
    """SMALL less the keys `name` does not accept or fixes, then `overrides`."""
    keys = set(architectures.config_keys(name))
    shared = {k: v for k, v in SMALL.items() if k not in architectures.fixed_keys(name)}
    return {k: v for k, v in {**shared, **overrides}.items() if k in keys}


def small_model(name: str, **overrides: object) -> architectures.LanguageModel:
    """Tiny float32 model of `name`, seed 0; keys the variant does not accept are dropped."""
    torch.manual_seed(0)
    return architectures.build(name, **small_config(name, **overrides))


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, SMALL["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed)
    )


def unroll(model: architectures.LanguageModel, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    state = model.init_state(x.shape[0])
    logits = []
    for t in range(x.shape[1]):
        step_logits, state = model.step(x[:, t : t + 1], state)
        logits.append(step_logits)
    return torch.cat(logits, dim=1), state


def test_registry_has_the_four_variants() -> None:
    assert {"transformer", "linear_attention", "mamba", "hybrid"} <= set(NAMES)
    assert NAMES == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name: str) -> None:
    variant = architectures.get(name)
    assert variant.name == name and variant.family and variant.papers and variant.version >= 1
    assert variant.doc and "\n" not in variant.doc


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_step_unrolled_equals_forward_and_state_size_matches(name: str) -> None:
    model = small_model(name).eval()
    x = tokens(2, T)
    logits = model(x)
    assert logits.shape == (2, T, SMALL["vocab_size"])
    stepped, state = unroll(model, x)
    assert (stepped - logits).abs().max().item() <= 1e-4
    assert model.state_size(T) == state_numel(state)
    assert model.state_size(0) == state_numel(model.init_state(3))


@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_causal(name: str) -> None:
    model = small_model(name).eval()
    x = tokens(2, T)
    t = 17
    changed = x.clone()
    changed[:, t + 1 :] = tokens(2, T - t - 1, seed=1)
    assert not torch.equal(changed, x)
    torch.testing.assert_close(model(changed)[:, : t + 1], model(x)[:, : t + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_batch_invariant(name: str) -> None:
    model = small_model(name).eval()
    batch = tokens(3, T)
    torch.testing.assert_close(model(batch[1:2]), model(batch)[1:2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_build_is_seeded_by_caller_and_config_is_canonical(name: str) -> None:
    a, b = small_model(name), small_model(name)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.num_params() == sum(p.numel() for p in a.parameters()) > 0
    assert a.variant == name and list(a.config) == sorted(a.config) == architectures.config_keys(
        name
    )
    assert json.loads(json.dumps(a.config)) == a.config
    assert architectures.resolve_config(name, **a.config) == a.config
    assert a.state_bytes(T, 3) == a.state_size(T) * 3 * 4  # float32


def test_kernel_paths() -> None:
    assert small_model("transformer").kernel_path == "sdpa+static_cache"
    assert small_model("transformer", kv_cache="concat").kernel_path == "sdpa+concat_cache"
    assert small_model("linear_attention").kernel_path == "chunked"
    assert small_model("mamba").kernel_path == "chunked"
    assert small_model("mamba", impl="reference").kernel_path == "sequential"
    assert small_model("hybrid").kernel_path == "chunked+sdpa+static_cache"
    assert small_model("hybrid", impl="reference").kernel_path == "sdpa+static_cache+sequential"
    assert small_model("linear_attention", impl="reference").kernel_path == "sequential"


def test_hybrid_puts_attention_last_in_each_group() -> None:
    model = small_model("hybrid", n_layers=4, attn_every=2)
    kinds = [type(block.mixer).__name__ for block in model.blocks]
    assert kinds == ["MambaMixer", "AttentionMixer", "MambaMixer", "AttentionMixer"]


def test_state_bytes_grow_for_attention_and_stay_flat_for_mamba() -> None:
    attention, mamba = small_model("transformer"), small_model("mamba")
    assert attention.state_bytes(64, 2) == 2 * attention.state_bytes(32, 2) > 0
    assert attention.state_bytes(0, 2) == 0
    assert mamba.state_bytes(4096, 2) == mamba.state_bytes(1, 2) > 0


def test_rmsnorm_backbone() -> None:
    model = small_model("transformer", norm="rmsnorm")
    assert isinstance(model.norm, torch.nn.RMSNorm)
    assert torch.isfinite(model(tokens(1, 8))).all()


def _scan_inputs(batch: int, length: int, inner: int, state: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, inner, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(batch, length, inner, generator=g) - 1)
    A = -torch.rand(inner, state, generator=g) * 4 - 0.5
    B, C = torch.randn(2, batch, length, state, generator=g)
    D, h0 = torch.randn(inner, generator=g), torch.randn(batch, inner, state, generator=g)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, h0)]


def _outputs_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    outputs = fn(*inputs)
    weights = [
        torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
        for i, o in enumerate(outputs)
    ]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))
    return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("chunk_size", [1, 8, 64])
@pytest.mark.parametrize("tile", [None, 3 * 2 * 6 * 5], ids=["steps", "tile-capped"])
def test_selective_scan_chunked_matches_reference(
    chunk_size: int, tile: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tile is not None:  # buffers of at most 3 steps at batch 2, E 6, N 5
        monkeypatch.setattr(mamba_module, "TILE", tile)
    inputs = _scan_inputs(2, 37, 6, 5)
    ref = _outputs_and_grads(selective_scan_ref, inputs)
    fast = _outputs_and_grads(lambda *a: selective_scan_chunked(*a, chunk_size=chunk_size), inputs)
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [1, 8, 64])
def test_linear_attention_chunked_matches_reference(chunk_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8, generator=g).requires_grad_() for _ in range(3))
    inputs = [q, k, v]

    def features(fn):
        return lambda q, k, v: (fn(feature_map(q), feature_map(k), v),)

    ref = _outputs_and_grads(features(linear_attention_ref), inputs)
    fast = _outputs_and_grads(
        features(lambda q, k, v: linear_attention_chunked(q, k, v, chunk_size)), inputs
    )
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, atol=1e-4, rtol=1e-4)


def test_unknown_config_key_names_key_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        architectures.resolve_config("mamba", d_stat=8)
    message = str(err.value)
    assert "'d_stat'" in message and "did you mean d_state" in message
    assert message.endswith("allowed: " + ", ".join(architectures.config_keys("mamba")))
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "config", "fragment"),
    [
        ("mamba", {"d_model": -4}, "'d_model' must be an integer >= 1; got -4"),
        ("mamba", {"d_model": 64.0}, "'d_model' must be int, got 64.0"),
        ("transformer", {"n_layers": True}, "'n_layers' must be int, got True"),
        ("linear_attention", {"chunk_size": 0}, "'chunk_size' must be an integer >= 1; got 0"),
        (
            "transformer",
            {"norm": "batchnorm"},
            "'norm' must be one of layernorm, rmsnorm; got 'batchnorm'",
        ),
        ("mamba", {"impl": "cuda"}, "'impl' must be one of fast, reference; got 'cuda'"),
        ("transformer", {"n_heads": 5}, "'n_heads' must split d_model=64"),
        ("hybrid", {"n_heads": 64}, "'n_heads' must split d_model=64 into heads of even width"),
    ],
)
def test_bad_config_value(name: str, config: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: ") as err:
        architectures.build(name, **config)
    assert fragment in str(err.value)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(RegistryError, match="did you mean mamba"):
        architectures.build("mambo")
    with pytest.raises(RegistryError, match="did you mean"):
        architectures.config_keys("transformr")


def test_variant_definition_errors() -> None:
    @dataclass(frozen=True)
    class NoDefault:
        width: int

    base = architectures.get("transformer")
    with pytest.raises(TypeError, match="needs a default"):
        replace(base, config_cls=NoDefault)
    with pytest.raises(ValueError, match="one paragraph"):
        replace(base, doc="first.\n\nsecond.")


def test_state_numel_counts_per_sequence() -> None:
    state = [{"k": torch.zeros(3, 2, 5)}, {"h": torch.zeros(3, 4)}, {}]  # the backbone's list
    assert state_numel(state) == 2 * 5 + 4 and state_numel(state[0]) == 2 * 5  # or one mixer's
    with pytest.raises(ValueError, match="batch"):
        state_numel([{"a": torch.zeros(3, 2)}, {"b": torch.zeros(2, 2)}])
    with pytest.raises(TypeError, match="dict of tensors"):
        state_numel([torch.zeros(3, 2)])  # a bare tensor is no mixer state
    with pytest.raises(TypeError, match="not a Tensor"):
        state_numel({"pos": 7})


# (variant, its keys, the variant it reduces to, that one's keys) at length T, n_layers 2
SAME_FUNCTION = [
    ("sliding_window", {"window": T}, "transformer", {}),
    ("masformer", {"window": T + 5}, "transformer", {}),
    ("masformer", {"global_every": 1, "window": 8}, "transformer", {}),
    ("masformer", {"global_every": 3, "window": 8}, "sliding_window", {"window": 8}),
    ("hybrid", {"attn_every": 1}, "transformer", {}),
    ("hybrid", {"attn_every": 3}, "mamba", {}),
    ("looped", {"n_loops": 1}, "transformer", {"n_layers": 1}),
    ("moe", {"n_experts": 0}, "transformer", {}),
    ("transformer", {"n_experts": 4, "top_k": 2}, "moe", {}),
    ("transformer", {"n_layers": 1, "n_loops": 4}, "looped", {}),
]


@pytest.mark.parametrize(("name", "keys", "other", "other_keys"), SAME_FUNCTION,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(SAME_FUNCTION)])
@torch.no_grad()
def test_same_function_warnings_are_true(name: str, keys: dict, other: str,
                                         other_keys: dict) -> None:
    reason = architectures.same_function(name, small_config(name, **keys), T)
    assert reason is not None and f"computes the same function as {other}" in reason
    assert "\n" not in reason
    x = tokens(2, T)
    # same seed, same config: the same weights, so the logits are exactly equal
    assert torch.equal(small_model(name, **keys)(x), small_model(other, **other_keys)(x))


@pytest.mark.parametrize(("name", "keys"), [
    ("sliding_window", {"window": T - 1}),
    ("masformer", {"window": 8}),
    ("hybrid", {"attn_every": 2}),
    ("looped", {"n_loops": 2}),
])
@torch.no_grad()
def test_distinct_settings_give_no_warning_and_differ(name: str, keys: dict) -> None:
    assert architectures.same_function(name, small_config(name, **keys), T) is None
    x = tokens(2, T)
    other = small_model("transformer", n_layers=1 if name == "looped" else 2)
    assert not torch.allclose(small_model(name, **keys)(x), other(x))


def test_same_function_reasons() -> None:
    assert architectures.same_function("sliding_window", {"window": 64}, 49) == (
        "window 64 >= sequence length 49: computes the same function as transformer")
    assert architectures.same_function("sliding_window", {"window": 64}, 65) is None
    one_expert = architectures.same_function("moe", {"n_experts": 1, "top_k": 1}, 8)
    assert one_expert is not None and one_expert.endswith("same function as transformer")
    assert all(architectures.same_function(n, {}, 16) is None
               for n in ("transformer", "mamba", "moe", "mod", "block_state"))
