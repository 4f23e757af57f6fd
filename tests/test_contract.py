"""One contract for every registered variant (architectures.names()).

(a) `impl`: a variant with a reference path has the config key `impl` ("fast" | "reference");
its two forms, built from the same seed, give the same logits and the same gradient for every
parameter. A variant without the key is listed in NO_IMPL with the reason, so a new variant
either gets the key or states why not.

(b) decoding state: `init_state`, `prefill` and `step` give the backbone's list (one entry per
block run) of per-mixer states, each a flat dict of str -> Tensor.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

import architectures
from tests.models import small_model, tokens

NAMES = architectures.names()
# small enough to be quick, small chunks/blocks/windows so that T crosses several of them
BASE = {"vocab_size": 29, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_state": 4,
        "chunk_size": 4, "block_len": 4, "window": 4, "attn_every": 2, "global_every": 2}
T = 13  # a ragged last chunk, block and window

NO_IMPL = {
    "linformer": "one SDPA call over sequence-projected keys: no second form of it",
    "looped": "the transformer's SDPA attention, weights shared across loops: one kernel",
    "lstm": "one aten LSTM kernel, no alternative",
    "mod": "one SDPA call under the routing mask: no second form of it",
    "moe": "the transformer's SDPA attention; its expert dispatch is checked against a dense "
           "reference in test_arch_backbone",
    "pool_mixer": "a cumulative sum: no faster or plainer form to compare",
    "transformer": "one SDPA call (is_causal): no second form; kv_cache only changes decoding",
}

# Float64 leaves only rounding between the forms: the chunked, FFT and blocked forms sum the
# same terms in another order (FFTs round at ~1e-16 relative): measured, the forms agree to
# <= 1.4e-12 absolute (worst elementwise relative 2e-10, on entries near 0); 1e-6 relative is
# far above that yet far below any real difference (a wrong mask, decay or carry moves results
# by >= 1e-3). atol covers entries that are ~0.
RTOL, ATOL = 1e-6, 1e-9


def _has_impl(name: str) -> bool:
    return "impl" in {f.name for f in fields(architectures.get(name).config_cls)}


WITH_IMPL = [n for n in NAMES if _has_impl(n)]


def test_variants_without_impl_are_exactly_the_listed_ones() -> None:
    assert {n for n in NAMES if not _has_impl(n)} == set(NO_IMPL)
    assert all(reason.strip() for reason in NO_IMPL.values())


def test_impl_is_the_fast_reference_choice() -> None:
    for name in WITH_IMPL:
        (impl,) = (f for f in fields(architectures.get(name).config_cls) if f.name == "impl")
        assert impl.default == "fast" and impl.metadata["choices"] == ("fast", "reference")


def _logits_and_grads(name: str, impl: str) -> tuple[str, list[torch.Tensor]]:
    model = small_model(name, BASE, impl=impl).double()
    logits = model(tokens(BASE["vocab_size"], 2, T))
    weight = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1),
                         dtype=logits.dtype)
    (logits * weight).sum().backward()  # a random projection: every logit matters
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return model.kernel_path, [logits.detach(), *grads]


@pytest.mark.parametrize("name", WITH_IMPL)
def test_fast_and_reference_give_the_same_logits_and_gradients(name: str) -> None:
    fast_path, fast = _logits_and_grads(name, "fast")
    ref_path, ref = _logits_and_grads(name, "reference")
    assert fast_path != ref_path, "kernel_path must name the kernel that ran"
    assert len(fast) == len(ref)
    for i, (f, r) in enumerate(zip(fast, ref, strict=True)):
        what = "logits" if i == 0 else f"grad of parameter {i - 1}"
        torch.testing.assert_close(f, r, rtol=RTOL, atol=ATOL, msg=lambda m, w=what: f"{w}: {m}")


def _assert_states(state: object, runs: int) -> None:
    assert isinstance(state, list) and len(state) == runs
    for layer in state:
        assert isinstance(layer, dict), type(layer)
        for key, value in layer.items():
            assert isinstance(key, str) and isinstance(value, torch.Tensor), (key, type(value))
            assert value.shape[0] == 2, (key, tuple(value.shape))  # leading dim: the batch


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_decoding_state_is_a_dict_of_tensors_per_block_run(name: str) -> None:
    model = small_model(name, BASE).eval()
    runs = len(model.blocks) * model.n_loops
    _assert_states(model.init_state(2), runs)
    x = tokens(BASE["vocab_size"], 2, T)
    if not architectures.get(name).causal:  # bidirectional: no decoding past init_state
        assert model.init_state(2) == [{}] * runs
        with pytest.raises(NotImplementedError):
            model.prefill(x)
        return
    _, state = model.prefill(x)
    _assert_states(state, runs)
    _, state = model.step(x[:, :1], state)
    _assert_states(state, runs)
