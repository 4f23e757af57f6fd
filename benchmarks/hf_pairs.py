"""Our mixers against their transformers counterparts with the same weights copied in.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/hf_pairs.py

Pairs: mamba (`MambaMixer`), rwkv (`RwkvSelfAttention`) and transformer attention
(`LlamaAttention`, RoPE in the rotate-half form both use). Prints a markdown table: the largest
relative difference of the outputs, `max|ours - hf| / max|hf|`, in float32, and the median
prefill latency (one (B, T, D) pass) of each and their ratio. `pairs()` is what
tests/test_hf.py checks. Mamba-2 is not paired yet (its in_proj packs z, x, B, C, dt in an order
and grouping that needs a mapping of its own).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

D, LAYERS = 64, 2


def _copy(dst: nn.Module, pairs: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, value in pairs.items():
            dst.get_parameter(name).copy_(value.reshape(dst.get_parameter(name).shape))


def mamba_pair() -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from architectures.mamba import MambaMixer as Ours

    ours = Ours(D, LAYERS, d_state=8, d_conv=4, expand=2, dt_rank=0, chunk_size=16, impl="fast")
    cfg = MambaConfig(hidden_size=D, state_size=8, conv_kernel=4, expand=2,
                      time_step_rank=ours.dt_rank, intermediate_size=2 * D)
    hf = MambaMixer(cfg, layer_idx=0)
    names = {"in_proj.weight": "in_proj.weight", "conv1d.weight": "conv.weight",
             "conv1d.bias": "conv.bias", "x_proj.weight": "x_proj.weight",
             "dt_proj.weight": "dt_proj.weight", "dt_proj.bias": "dt_proj.bias",
             "out_proj.weight": "out_proj.weight", "A_log": "A_log", "D": "D"}
    _copy(hf, {h: ours.get_parameter(o) for h, o in names.items()})
    return ours, lambda x: hf(x)


def rwkv_pair() -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from transformers import RwkvConfig
    from transformers.models.rwkv.modeling_rwkv import RwkvSelfAttention

    from architectures.rwkv import RWKVTimeMix as Ours

    ours = Ours(D, 0, LAYERS, chunk_size=16, impl="fast")
    hf = RwkvSelfAttention(RwkvConfig(hidden_size=D, attention_hidden_size=D), layer_id=0)
    names = {n: n for n in ("key.weight", "value.weight", "receptance.weight", "output.weight",
                            "time_decay", "time_first")}
    names.update({"time_mix_key": "time_mix_k", "time_mix_value": "time_mix_v",
                  "time_mix_receptance": "time_mix_r"})
    _copy(hf, {h: ours.get_parameter(o) for h, o in names.items()})
    return ours, lambda x: hf(x)[0]


def llama_pair() -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    from architectures.transformer import AttentionMixer as Ours

    heads = 4
    ours = Ours(D, heads, LAYERS)
    cfg = LlamaConfig(hidden_size=D, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=D // heads, attention_bias=False)
    cfg._attn_implementation = "sdpa"
    hf, rotary = LlamaAttention(cfg, layer_idx=0), LlamaRotaryEmbedding(cfg)
    q, k, v = ours.qkv.weight.chunk(3, dim=0)
    _copy(hf, {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v,
               "o_proj.weight": ours.out.weight})

    def run(x: Tensor) -> Tensor:
        pos = torch.arange(x.shape[1]).unsqueeze(0)
        return hf(x, position_embeddings=rotary(x, pos), attention_mask=None)[0]

    return ours, run


PAIRS: dict[str, Callable[[], tuple[nn.Module, Callable[[Tensor], Tensor]]]] = {
    "mamba / MambaMixer": mamba_pair,
    "rwkv / RwkvSelfAttention": rwkv_pair,
    "transformer / LlamaAttention": llama_pair,
}


def rel_diff(ours: Tensor, theirs: Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@torch.no_grad()
def pairs(batch: int = 2, seq_len: int = 37) -> dict[str, float]:
    """Pair name -> max relative difference of the outputs on one random input."""
    out = {}
    for name, make in PAIRS.items():
        torch.manual_seed(0)
        ours, theirs = make()
        x = torch.randn(batch, seq_len, D)
        out[name] = rel_diff(ours(x), theirs(x))
    return out


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def table(batch: int = 4, seq_len: int = 256, repeats: int = 7) -> str:
    diffs = pairs()
    lines = [f"prefill: one (B={batch}, T={seq_len}, D={D}) pass, float32, CPU, median of "
             f"{repeats}; max rel diff on (2, 37, {D})", "",
             "| pair | max rel diff | ours ms | hf ms | hf / ours |", "|---|---|---|---|---|"]
    for name, make in PAIRS.items():
        torch.manual_seed(0)
        ours, theirs = make()
        x = torch.randn(batch, seq_len, D)
        a = _median_s(lambda: ours(x), repeats) * 1e3  # noqa: B023
        b = _median_s(lambda: theirs(x), repeats) * 1e3  # noqa: B023
        lines.append(f"| {name} | {diffs[name]:.1e} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(table())
