"""Our mixers against their transformers counterparts with the same weights copied in.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/hf_pairs.py

Pairs: mamba (`MambaMixer`), mamba2 (`Mamba2Mixer`, one group of B and C: ours has no other),
rwkv (`RwkvSelfAttention`) and transformer attention (`LlamaAttention`, RoPE in the rotate-half
form both use). Prints a markdown table: the largest relative difference of the outputs,
`max|ours - hf| / max|hf|`, in float32, of the parallel forward and of single-token steps after
a prefill; the median prefill latency (one (B, T, D) pass) of each and their ratio; the median
latency of one decode step of each and their ratio. Decoding is timed at the module level: our
mixer's `step(x_t, state)` after `prefill`, against the transformers module called on one token
with its own cache (`cache=` a `DynamicCache`: conv/recurrent states for Mamba and Mamba-2,
keys/values for Llama; RWKV's `state=` list of five tensors). `pairs()` is what
tests/test_hf.py checks.

Mamba-2 mapping: both pack `in_proj` as [z (E), x (E), B (G N), C (G N), dt (H)] and run x, B, C
through one depthwise conv (ours `conv`, theirs `conv1d`), so in_proj, conv weight/bias, A_log,
D, dt_bias, norm.weight and out_proj copy over one to one; both gate before the RMSNorm
(`norm(y * silu(z))`, transformers' `MambaRMSNormGated`, `norm_before_gate=False`) over the
whole E channels when n_groups = 1; transformers' default `time_step_limit` (0, inf) clamps
nothing. With n_groups > 1 transformers normalises each group of E / G channels on its own and
gives each group of heads its own B, C: a function ours does not have (not paired).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

D, LAYERS = 64, 2


class Pair(NamedTuple):
    """Our mixer and the transformers module as functions of (B, T, D) inputs."""

    ours: nn.Module
    forward: Callable[[Tensor], Tensor]  # theirs, no cache
    prefill: Callable[[Tensor], Any]  # theirs over (B, T, D) -> its cache after the T tokens
    step: Callable[[Tensor, Any], Tensor]  # theirs, one token (B, 1, D); updates the cache


def _copy(dst: nn.Module, pairs: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, value in pairs.items():
            dst.get_parameter(name).copy_(value.reshape(dst.get_parameter(name).shape))


def _cached(ours: nn.Module, hf: nn.Module, cfg: Any) -> Pair:
    """A pair whose transformers module keeps its state in a `DynamicCache` (`cache=`)."""
    from transformers import DynamicCache

    def prefill(x: Tensor) -> Any:
        cache = DynamicCache(config=cfg)
        hf(x, cache=cache)
        return cache

    return Pair(ours, lambda x: hf(x), prefill, lambda x, cache: hf(x, cache=cache))


def mamba_pair() -> Pair:
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from architectures.mamba import MambaMixer as Ours

    ours = Ours(D, LAYERS, d_state=8, d_conv=4, expand=2, dt_rank=0, chunk_size=16, impl="fast")
    cfg = MambaConfig(hidden_size=D, state_size=8, conv_kernel=4, expand=2, num_hidden_layers=1,
                      time_step_rank=ours.dt_rank, intermediate_size=2 * D)
    hf = MambaMixer(cfg, layer_idx=0).eval()
    names = {"in_proj.weight": "in_proj.weight", "conv1d.weight": "conv.weight",
             "conv1d.bias": "conv.bias", "x_proj.weight": "x_proj.weight",
             "dt_proj.weight": "dt_proj.weight", "dt_proj.bias": "dt_proj.bias",
             "out_proj.weight": "out_proj.weight", "A_log": "A_log", "D": "D"}
    _copy(hf, {h: ours.get_parameter(o) for h, o in names.items()})
    return _cached(ours, hf, cfg)


def mamba2_pair() -> Pair:
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    from architectures.mamba2 import Mamba2Mixer as Ours

    heads, d_state = 8, 8  # head_dim = 2 D / heads = 16
    ours = Ours(D, LAYERS, d_state=d_state, n_heads=heads, expand=2, d_conv=4, chunk_size=16,
                impl="fast")
    cfg = Mamba2Config(hidden_size=D, num_heads=heads, head_dim=ours.head_dim, n_groups=1,
                       state_size=d_state, expand=2, conv_kernel=4, chunk_size=16,
                       num_hidden_layers=1, layer_norm_epsilon=ours.norm.eps)
    hf = Mamba2Mixer(cfg, layer_idx=0).eval()
    names = {"in_proj.weight": "in_proj.weight", "conv1d.weight": "conv.weight",
             "conv1d.bias": "conv.bias", "out_proj.weight": "out_proj.weight",
             "norm.weight": "norm.weight", "A_log": "A_log", "D": "D", "dt_bias": "dt_bias"}
    with torch.no_grad():  # the RMSNorm weight starts at ones on both sides: make it count
        ours.norm.weight.uniform_(0.5, 1.5)
    _copy(hf, {h: ours.get_parameter(o) for h, o in names.items()})
    return _cached(ours, hf, cfg)


def rwkv_pair() -> Pair:
    from transformers import RwkvConfig
    from transformers.models.rwkv.modeling_rwkv import RwkvSelfAttention

    from architectures import _hf_rwkv
    from architectures.rwkv import RWKVTimeMix as Ours

    ours = Ours(D, 0, LAYERS, chunk_size=16, impl="fast")
    cfg = RwkvConfig(hidden_size=D, attention_hidden_size=D, num_hidden_layers=1)
    # with archbench's fix of the one-token step for batches > 1 (architectures/_hf_rwkv.py)
    hf = _hf_rwkv.patch(RwkvSelfAttention(cfg, layer_id=0).eval())
    names = {n: n for n in ("key.weight", "value.weight", "receptance.weight", "output.weight",
                            "time_decay", "time_first")}
    names.update({"time_mix_key": "time_mix_k", "time_mix_value": "time_mix_v",
                  "time_mix_receptance": "time_mix_r"})
    _copy(hf, {h: ours.get_parameter(o) for h, o in names.items()})

    def prefill(x: Tensor) -> list[Tensor]:  # as RwkvModel starts its state
        state = [torch.zeros(x.shape[0], D, 1) for _ in range(5)]
        state[4] -= 1e30
        return hf(x, state=state, use_cache=True)[1]

    return Pair(ours, lambda x: hf(x)[0], prefill,
                lambda x, state: hf(x, state=state, use_cache=True)[0])


def llama_pair() -> Pair:
    from transformers import DynamicCache, LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    from architectures.transformer import AttentionMixer as Ours

    heads = 4
    ours = Ours(D, heads, LAYERS)
    cfg = LlamaConfig(hidden_size=D, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=D // heads, attention_bias=False, num_hidden_layers=1)
    cfg._attn_implementation = "sdpa"
    hf, rotary = LlamaAttention(cfg, layer_idx=0).eval(), LlamaRotaryEmbedding(cfg)
    q, k, v = ours.qkv.weight.chunk(3, dim=0)
    _copy(hf, {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v,
               "o_proj.weight": ours.out.weight})

    def run(x: Tensor, cache: Any = None) -> Tensor:
        start = 0 if cache is None else cache.get_seq_length()
        pos = torch.arange(start, start + x.shape[1]).unsqueeze(0)
        return hf(x, position_embeddings=rotary(x, pos), attention_mask=None, cache=cache)[0]

    def prefill(x: Tensor) -> Any:
        cache = DynamicCache(config=cfg)
        run(x, cache)
        return cache

    return Pair(ours, run, prefill, run)


PAIRS: dict[str, Callable[[], Pair]] = {
    "mamba / MambaMixer": mamba_pair,
    "mamba2 / Mamba2Mixer": mamba2_pair,
    "rwkv / RwkvSelfAttention": rwkv_pair,
    "transformer / LlamaAttention": llama_pair,
}


def rel_diff(ours: Tensor, theirs: Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@torch.no_grad()
def decode(pair: Pair, x: Tensor, tokens: Tensor) -> tuple[list[float], list[float], float]:
    """Prefill both sides on x (B, T, D), then step both through tokens (n, B, 1, D), alternating
    ours and theirs each token: seconds per step of each, and the largest relative difference of
    the step outputs."""
    _, state = pair.ours.prefill(x)
    cache = pair.prefill(x)
    ours_s, hf_s, diff = [], [], 0.0
    for x_t in tokens:
        t0 = time.perf_counter()
        y, state = pair.ours.step(x_t, state)
        t1 = time.perf_counter()
        theirs = pair.step(x_t, cache)
        t2 = time.perf_counter()
        ours_s.append(t1 - t0)
        hf_s.append(t2 - t1)
        diff = max(diff, rel_diff(y, theirs))
    return ours_s, hf_s, diff


@torch.no_grad()
def pairs(batch: int = 2, seq_len: int = 37, steps: int = 3) -> dict[str, dict[str, float]]:
    """Pair name -> largest relative difference of the outputs on one random input: "forward"
    (parallel, over (batch, seq_len, D)) and "step" (`steps` tokens after a prefill of it)."""
    out = {}
    for name, make in PAIRS.items():
        torch.manual_seed(0)
        pair = make()
        pair.ours.eval()
        x = torch.randn(batch, seq_len, D)
        forward = rel_diff(pair.ours(x), pair.forward(x))
        step = decode(pair, x, torch.randn(steps, batch, 1, D))[2]
        out[name] = {"forward": forward, "step": step}
    return out


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _caption(batch: int, seq_len: int, repeats: int, steps: int) -> list[str]:
    return [
        f"float32, CPU, one thread. max rel diff forward: on (2, 37, {D}); step: over the "
        f"{steps} decode tokens timed below. prefill: one (B={batch}, T={seq_len}, D={D}) pass, "
        f"median of {repeats}. decode, module level: one token (B={batch}, 1, {D}) after a "
        f"prefill of T={seq_len}, ours `step(x_t, state)`, transformers the module's one-token "
        "path with its own cache (`cache=` DynamicCache; rwkv `state=`), ours and theirs "
        f"alternating token by token, median of the last {steps - 1} (the first is a warm-up).",
        "",
        "| pair | max rel diff forward | max rel diff step | prefill ours ms | prefill hf ms "
        "| prefill hf / ours | decode ours ms | decode hf ms | decode hf / ours |",
        "|---|---|---|---|---|---|---|---|---|"]


@torch.no_grad()
def table(batch: int = 4, seq_len: int = 256, repeats: int = 7, steps: int = 33) -> str:
    lines = _caption(batch, seq_len, repeats, steps)
    for name, make in PAIRS.items():
        torch.manual_seed(0)
        pair = make()
        pair.ours.eval()
        small = torch.randn(2, 37, D)
        forward = rel_diff(pair.ours(small), pair.forward(small))
        x = torch.randn(batch, seq_len, D)
        a = _median_s(lambda: pair.ours(x), repeats) * 1e3  # noqa: B023
        b = _median_s(lambda: pair.forward(x), repeats) * 1e3  # noqa: B023
        ours_s, hf_s, step = decode(pair, x, torch.randn(steps, batch, 1, D))
        c, d = (statistics.median(s[1:]) * 1e3 for s in (ours_s, hf_s))
        lines.append(f"| {name} | {forward:.1e} | {step:.1e} | {a:.2f} | {b:.2f} | {b / a:.2f} "
                     f"| {c:.3f} | {d:.3f} | {d / c:.2f} |")
    return "\n".join(lines)

if __name__ == "__main__":
    torch.set_num_threads(1)
    print(table())
