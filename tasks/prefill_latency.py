"""Prefill latency: one parallel ``forward`` over a (B, T) batch of tokens, inference mode.

Every shape is warmed up before timing; iterations are calibrated so one sample lasts long
enough to read; the device is synchronised before every clock read. Samples alternate with a
fixed reference matmul (``latency_vs_ref``), their number adapts to a CI target, and a
measurement taken under contention is re-measured (``tasks.instruments.timing``; version 2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

import tasks
from tasks._timed import LATENCY_SPECS, TOKENS_PER_S, TimingConfig, latency_metrics
from tasks.base import Metric, Task
from tasks.instruments.context import CellContext
from tasks.instruments.timing import Timing, in_processes, pooled


@dataclass(frozen=True)
class Config(TimingConfig):
    batch_size: int = 1
    seq_len: int = 512
    n_samples: int = 15  # timed samples, each the mean of calibrated iterations
    warmup: int = 3
    min_sample_s: float = 0.01  # one sample lasts at least this long
    max_total_s: float = 20.0  # stop sampling after this much timing
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1 or self.n_samples < 1:
            raise ValueError("batch_size, seq_len and n_samples must be >= 1")
        super().validate()


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    def measure() -> Timing:  # in a fresh process: model, tokens, timing
        model = ctx.model(cfg.checkpoint)
        tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len, model.config["vocab_size"])
        with torch.inference_mode():
            return cfg.time(lambda: model(tokens), ctx)

    results = in_processes(cfg.processes, measure)
    extra = {"checkpoint": ctx.checkpoint_path(cfg.checkpoint), "batch_size": cfg.batch_size,
             "seq_len": cfg.seq_len, "processes": len(results)}
    return latency_metrics(pooled(results), cfg.batch_size * cfg.seq_len, extra)


# a forward pass's tokens/s: times the flops task's FLOP/token, the achieved FLOP/s
PREFILL_SPECS = tuple(replace(s, role="forward_tokens_per_s") if s is TOKENS_PER_S else s
                      for s in LATENCY_SPECS)

TASK = tasks.register(Task(
    name="prefill_latency", kind="efficiency", version=3, config_cls=Config, run=run,
    headline="latency_ms", doc=__doc__ or "", needs_causal=False, metrics=PREFILL_SPECS,
    sweep_key="seq_len",
))
