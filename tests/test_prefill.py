"""`prefill`: one parallel pass gives forward's logits and the state T single steps reach.

Checked for every registered variant, at lengths shorter and longer than windows, blocks and
chunks; then the preallocated KV cache: its growth, that it does not reallocate per step, that
a state can be stepped again and again, and that it agrees with the concatenating cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor

import architectures
from architectures import state_numel
from architectures._kv import MIN_CAPACITY, KVCache, capacity_for

VOCAB = 17
# small structure; the keys a variant does not have are dropped
SMALL = {"d_model": 32, "n_layers": 2, "vocab_size": VOCAB, "window": 8, "block_len": 8,
         "chunk_size": 8}
LENGTHS = (1, 7, 16, 40)  # 16: whole blocks of 8; 40: past every window, block and chunk
ATOL, RTOL = 1e-5, 1e-4
CAUSAL = [n for n in architectures.names() if architectures.get(n).causal]
BIDIRECTIONAL = [n for n in architectures.names() if not architectures.get(n).causal]
# the variants whose decoding state holds a KV cache
ATTENTION = ["transformer", "sliding_window", "mod", "masformer", "moe", "looped", "hybrid",
             "block_state"]


def small_model(name: str, **overrides: Any) -> architectures.LanguageModel:
    keys = set(architectures.config_keys(name)) - set(architectures.fixed_keys(name))
    config = {k: v for k, v in {**SMALL, **overrides}.items() if k in keys}
    torch.manual_seed(0)
    return architectures.build(name, **config).eval()


def tokens(batch: int, length: int, seed: int = 0) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def unroll(model: architectures.LanguageModel, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """Step x's tokens one at a time (from init_state unless a state is given)."""
    state = model.init_state(x.shape[0]) if state is None else state
    logits = []
    for tok in x.split(1, dim=1):
        out, state = model.step(tok, state)
        logits.append(out)
    return torch.cat(logits, dim=1), state


def assert_same_state(got: Any, want: Any, path: str = "state") -> None:
    """Same structure (types, keys, lengths, shapes, dtypes) and tensors equal within tolerance;
    a KVCache compares its filled views, "pos" and window, never its spare capacity."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, Tensor):
        assert got.shape == want.shape and got.dtype == want.dtype, (
            f"{path}: {tuple(got.shape)} {got.dtype} != {tuple(want.shape)} {want.dtype}")
        if want.dtype == torch.bool:
            assert torch.equal(got, want), path
        else:
            torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL,
                                       msg=lambda m: f"{path}: {m}")
    elif isinstance(want, KVCache):
        assert got.window == want.window, f"{path}: window"
        assert list(got) == list(want), f"{path}: fields {list(got)} != {list(want)}"
        for key in want:
            assert_same_state(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, Mapping):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same_state(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_state(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


# --- the contract, every variant ---


@pytest.mark.parametrize("name", architectures.names())
def test_every_decoding_module_has_prefill(name: str) -> None:
    """No registered variant relies on the backbone's step-by-step fallback."""
    model = small_model(name)
    missing = [type(m).__name__ for m in model.modules()
               if hasattr(m, "step") and hasattr(m, "init_state") and not hasattr(m, "prefill")]
    assert not missing, f"{name}: no prefill on {missing}"


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", CAUSAL)
@torch.no_grad()
def test_prefill_equals_forward_and_steps(name: str, length: int) -> None:
    model = small_model(name)
    x, more = tokens(2, length), tokens(2, 3, seed=1)
    logits, state = model.prefill(x)
    torch.testing.assert_close(logits, model(x), atol=ATOL, rtol=RTOL)
    stepped_logits, stepped = unroll(model, x)
    assert_same_state(state, stepped)
    assert state_numel(state) == model.state_size(length)
    # both states go on decoding alike
    after_prefill, state = unroll(model, more, state)
    after_steps, stepped = unroll(model, more, stepped)
    torch.testing.assert_close(after_prefill, after_steps, atol=ATOL, rtol=RTOL)
    assert_same_state(state, stepped)
    # and what they decode is forward over the whole sequence
    whole = model(torch.cat([x, more], dim=1))[:, length:]
    torch.testing.assert_close(after_prefill, whole, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", BIDIRECTIONAL)
def test_bidirectional_variants_refuse_prefill_as_step(name: str) -> None:
    model = small_model(name)
    with pytest.raises(NotImplementedError, match="bidirectional"):
        model.prefill(tokens(2, 5))


@pytest.mark.parametrize("name", ["transformer", "mamba"])
def test_prefill_of_nothing_is_init_state(name: str) -> None:
    model = small_model(name)
    logits, state = model.prefill(tokens(3, 0))
    assert logits.shape == (3, 0, VOCAB)
    assert_same_state(state, model.init_state(3))


@torch.no_grad()
def test_backbone_steps_a_mixer_without_prefill() -> None:
    """A plugin mixer with no prefill of its own is stepped token by token."""
    model = small_model("transformer")
    for block in model.blocks:
        block.mixer.prefill = None  # what getattr finds on a mixer that lacks the method
    x = tokens(2, 9)
    logits, state = model.prefill(x)
    torch.testing.assert_close(logits, model(x), atol=ATOL, rtol=RTOL)
    assert_same_state(state, unroll(model, x)[1])


@pytest.mark.parametrize("n_loops", [1, 3])
@pytest.mark.parametrize("norm_position", ["pre", "post", "peri"])
@torch.no_grad()
def test_prefill_across_backbone_axes(norm_position: str, n_loops: int) -> None:
    """Norm placement, routed experts and looped stacks (a state per block run)."""
    model = small_model("transformer", norm_position=norm_position, n_loops=n_loops,
                        n_experts=3, top_k=2)
    x = tokens(2, 11)
    logits, state = model.prefill(x)
    torch.testing.assert_close(logits, model(x), atol=ATOL, rtol=RTOL)
    assert len(state) == 2 * n_loops
    assert_same_state(state, unroll(model, x)[1])


# --- the static KV cache ---


def test_capacity_grows_geometrically() -> None:
    assert capacity_for(0) == MIN_CAPACITY and capacity_for(15) == 16
    assert capacity_for(16) == 32 and capacity_for(40) == 64 and capacity_for(1000) == 1024
    # a window caps the buffer at 2 x window; once it is full, a fresh buffer of 2 x window
    assert capacity_for(3, window=8) == 16 and capacity_for(7, window=8) == 16
    assert capacity_for(100, window=300) == 128 and capacity_for(299, window=300) == 600
    assert capacity_for(0, window=1) == 2


def _kv(n: int, start: int = 0) -> dict[str, Tensor]:
    """Keys and values whose every element is its token's position, (1, 1, n, 2)."""
    t = torch.arange(start, start + n, dtype=torch.float32)[None, None, :, None]
    return {"k": t.expand(1, 1, n, 2).clone(), "v": -t.expand(1, 1, n, 2).clone()}


@pytest.mark.parametrize("window", [None, 1, 3, 8])
def test_cache_holds_the_last_tokens_in_order(window: int | None) -> None:
    cache = KVCache.from_tokens(**_kv(0), window=window)
    for t in range(50):
        cache = cache.append(**_kv(1, t))
        held = t + 1 if window is None else min(t + 1, window)
        assert cache["k"][0, 0, :, 0].tolist() == list(range(t + 1 - held, t + 1))
        assert cache["v"].equal(-cache["k"]) and cache.pos == t + 1
        assert cache.capacity <= max(MIN_CAPACITY, 2 * (t + 1)) if window is None else (
            cache.capacity <= 2 * window)
        assert state_numel(cache) == 2 * 2 * held  # the filled part only


def test_cache_from_tokens_keeps_the_window_and_the_position() -> None:
    cache = KVCache.from_tokens(**_kv(20), window=8)
    assert cache["k"][0, 0, :, 0].tolist() == list(range(12, 20)) and cache.pos == 20
    assert cache.capacity == 16


def test_cache_append_writes_one_slot_of_a_shared_buffer() -> None:
    cache = KVCache.from_tokens(**_kv(0))
    buffer = cache.buffers["k"]
    states = [cache]
    for t in range(MIN_CAPACITY):
        states.append(states[-1].append(**_kv(1, t)))
        assert states[-1].buffers["k"].data_ptr() == buffer.data_ptr()  # no copy, no realloc
    grown = states[-1].append(**_kv(1, MIN_CAPACITY))  # full: one copy into twice the room
    assert grown.capacity == 2 * MIN_CAPACITY
    assert grown.buffers["k"].data_ptr() != buffer.data_ptr()
    assert grown["k"][0, 0, :, 0].tolist() == list(range(MIN_CAPACITY + 1))
    # every earlier state still reads its own prefix
    for t, state in enumerate(states):
        assert state.pos == t and state["k"][0, 0, :, 0].tolist() == list(range(t))


@pytest.mark.parametrize("window", [None, 4])
def test_an_older_state_can_be_stepped_after_newer_ones(window: int | None) -> None:
    old = KVCache.from_tokens(**_kv(10), window=window)
    newer = old
    for t in range(10, 40):  # runs past the buffer's capacity and, windowed, several moves
        newer = newer.append(**_kv(1, t))
    again = old.append(**_kv(1, 100))  # a different next token from the old state
    held = [*range(10), 100] if window is None else [7, 8, 9, 100]
    assert again["k"][0, 0, :, 0].tolist() == held and again.pos == 11


def test_cache_checks_its_fields() -> None:
    cache = KVCache.from_tokens(**_kv(3))
    with pytest.raises(ValueError, match="needs fields"):
        cache.append(k=_kv(1)["k"])
    with pytest.raises(ValueError, match="disagree on length"):
        KVCache.from_tokens(k=_kv(3)["k"], v=_kv(2)["v"])
    assert cache == cache and cache != KVCache.from_tokens(**_kv(3))  # identity, not by value


@torch.no_grad()
def test_static_cache_does_not_reallocate_per_step() -> None:
    model = small_model("transformer")
    _, state = model.prefill(tokens(2, 20))  # 20 tokens: capacity 32
    assert all(layer.capacity == 32 for layer in state)
    pointers = [layer.buffers["k"].data_ptr() for layer in state]
    for t in range(11):  # up to 31 tokens: every step writes into the same buffers
        _, state = model.step(tokens(2, 1, seed=t), state)
        assert [layer.buffers["k"].data_ptr() for layer in state] == pointers
    _, state = model.step(tokens(2, 1), state)  # the 32nd fills it
    _, state = model.step(tokens(2, 1), state)  # the 33rd moves into 64 slots
    assert all(layer.capacity == 64 for layer in state)
    assert state_numel(state) == model.state_size(33)


@pytest.mark.parametrize("length", [1, 7, 40])
@torch.no_grad()
def test_static_and_concat_caches_agree(length: int) -> None:
    static, concat = small_model("transformer"), small_model("transformer", kv_cache="concat")
    assert static.kernel_path == "sdpa+static_cache"
    assert concat.kernel_path == "sdpa+concat_cache"
    x, more = tokens(2, length), tokens(2, 20, seed=1)
    logits_s, state_s = static.prefill(x)
    logits_c, state_c = concat.prefill(x)
    torch.testing.assert_close(logits_s, logits_c, atol=0, rtol=0)
    assert [type(s) for s in state_s] == [KVCache] * 2 and [type(s) for s in state_c] == [dict] * 2
    for s, c in zip(state_s, state_c, strict=True):
        torch.testing.assert_close(s["k"], c["k"], atol=0, rtol=0)
        torch.testing.assert_close(s["v"], c["v"], atol=0, rtol=0)
    out_s, state_s = unroll(static, more, state_s)
    out_c, state_c = unroll(concat, more, state_c)
    torch.testing.assert_close(out_s, out_c, atol=ATOL, rtol=RTOL)
    assert state_numel(state_s) == state_numel(state_c) == static.state_size(length + 20)
    assert_same_state(concat.prefill(x)[1], unroll(concat, x)[1])


def test_kv_cache_is_a_config_key() -> None:
    assert architectures.resolve_config("transformer")["kv_cache"] == "static"
    with pytest.raises(architectures.ConfigError, match="kv_cache"):
        architectures.build("transformer", kv_cache="paged")


@pytest.mark.parametrize("name", ATTENTION)
@torch.no_grad()
def test_stepping_the_same_state_again_and_again(name: str) -> None:
    """The decode benchmark times step(tok, state_L) repeatedly from one prefilled state."""
    model = small_model(name)
    x, tok = tokens(2, 37), tokens(2, 1, seed=1)
    _, state = model.prefill(x)
    first, _ = model.step(tok, state)
    for _ in range(3):
        again, _ = model.step(tok, state)
        torch.testing.assert_close(again, first, atol=0, rtol=0)
    # a newer state decodes 20 more tokens (writing slots past the old state's, moving the
    # window, finishing blocks); the old state still decodes as before, and as forward says
    _, newer = unroll(model, tokens(2, 20, seed=2), state)
    other = tokens(2, 1, seed=3)
    from_old, _ = model.step(other, state)
    torch.testing.assert_close(from_old, model(torch.cat([x, other], 1))[:, -1:],
                               atol=1e-4, rtol=1e-4)
    again, _ = model.step(tok, state)
    torch.testing.assert_close(again, first, atol=0, rtol=0)
    assert state_numel(state) == model.state_size(37)
