"""Training-step latency: forward, cross-entropy loss, backward and an AdamW step over (B, T).

Warm-up steps run first (AdamW allocates its moments on the first step); iterations are
calibrated and the device is synchronised before every clock read. Weights change between
calls, as in real training; the cost of a step does not depend on their values. Samples
alternate with a fixed reference matmul (``latency_vs_ref``), their number adapts to a CI
target, and a measurement taken under contention is re-measured (``instruments.timing``; version 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import tasks
from tasks._timed import LATENCY_SPECS, TimingConfig, latency_metrics
from tasks.base import Metric, Task
from tasks.instruments.context import CellContext
from tasks.instruments.timing import Timing, in_processes, pooled


@dataclass(frozen=True)
class Config(TimingConfig):
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 1e-3
    n_samples: int = 10
    warmup: int = 2
    min_sample_s: float = 0.02
    max_total_s: float = 30.0
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.batch_size < 1 or self.seq_len < 2 or self.n_samples < 1:
            raise ValueError("batch_size and n_samples must be >= 1, seq_len >= 2")
        super().validate()
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    def measure() -> Timing:  # in a fresh process: model, optimiser, timing
        model = ctx.model(cfg.checkpoint).train()
        vocab = model.config["vocab_size"]
        tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len + 1, vocab)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)

        def train_step() -> None:
            logits = model(inputs)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return cfg.time(train_step, ctx)

    results = in_processes(cfg.processes, measure)
    extra = {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "optimizer": "AdamW",
             "checkpoint": ctx.checkpoint_path(cfg.checkpoint), "processes": len(results)}
    return latency_metrics(pooled(results), cfg.batch_size * cfg.seq_len, extra)


TASK = tasks.register(Task(
    name="train_step_latency", kind="efficiency", version=3, config_cls=Config, run=run,
    headline="latency_ms", doc=__doc__ or "", metrics=LATENCY_SPECS, sweep_key="seq_len",
))
