"""Prefill latency: one parallel ``forward`` over a (B, T) batch of tokens, inference mode.

Every shape is warmed up before timing; iterations are calibrated so one sample lasts long
enough to read; the device is synchronised before every clock read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import tasks
from harness.context import CellContext
from harness.timing import time_fn
from tasks._timed import latency_metrics
from tasks.base import Metric, Task


@dataclass(frozen=True)
class Config:
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


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    model = ctx.model(cfg.checkpoint)
    tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len, model.config["vocab_size"])
    with torch.inference_mode():
        timing = time_fn(
            lambda: model(tokens), sync=ctx.sync, warmup=cfg.warmup,
            min_sample_s=cfg.min_sample_s, n_samples=cfg.n_samples, max_total_s=cfg.max_total_s,
        )
    extra = {"checkpoint": ctx.checkpoint_path(cfg.checkpoint), "batch_size": cfg.batch_size,
             "seq_len": cfg.seq_len,
             "kernel_path": model.kernel_path}
    return latency_metrics(timing, cfg.batch_size * cfg.seq_len, extra)


TASK = tasks.register(Task(
    name="prefill_latency", kind="efficiency", version=1, config_cls=Config, run=run,
    headline="latency_ms", doc=__doc__ or "", needs_causal=False,
))
