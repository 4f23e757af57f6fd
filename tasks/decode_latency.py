"""Decode latency: per-token ``step`` latency against a state that already holds L tokens.

The context is prefilled through ``step`` (so the state is exactly what decoding holds), then
single-token steps are timed. Each timed call advances the state by one token, so the context
grows from L during timing; the range is recorded with the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import tasks
from architectures import state_numel
from harness.context import CellContext
from harness.timing import time_fn
from tasks._timed import latency_metrics
from tasks.base import Metric, Task


@dataclass(frozen=True)
class Config:
    context_len: int = 256  # L: tokens in the state before timing starts
    batch_size: int = 1
    n_samples: int = 15
    warmup: int = 3
    min_sample_s: float = 0.005
    max_total_s: float = 20.0
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.context_len < 0 or self.batch_size < 1 or self.n_samples < 1:
            raise ValueError("context_len must be >= 0, batch_size and n_samples >= 1")


def prefill_state(model: Any, tokens: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """Feed ``tokens`` (B, L) one at a time; return the state and the last logits (B, 1, V)."""
    state = model.init_state(tokens.shape[0])
    logits = None
    for tok in tokens.split(1, dim=1):  # (B, 1) each
        logits, state = model.step(tok, state)
    return state, logits


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    model = ctx.model(cfg.checkpoint)
    vocab = model.config["vocab_size"]
    context = ctx.random_tokens(cfg.batch_size, cfg.context_len, vocab)
    box: dict[str, Any] = {"steps": 0}
    with torch.inference_mode():
        box["state"], _ = prefill_state(model, context)
        measured_numel = state_numel(box["state"])  # before timing grows the context
        next_tok = ctx.random_tokens(cfg.batch_size, 1, vocab, offset=1)

        def one_step() -> None:
            _, box["state"] = model.step(next_tok, box["state"])
            box["steps"] += 1

        timing = time_fn(
            one_step, sync=ctx.sync, warmup=cfg.warmup, min_sample_s=cfg.min_sample_s,
            n_samples=cfg.n_samples, max_total_s=cfg.max_total_s,
        )
    extra = {
        "checkpoint": ctx.checkpoint_path(cfg.checkpoint),
        "batch_size": cfg.batch_size, "context_len": cfg.context_len,
        "context_len_end": cfg.context_len + box["steps"], "kernel_path": "step",
    }
    return [*latency_metrics(timing, cfg.batch_size, extra),
            *state_metrics(model, measured_numel, cfg, extra)]


def state_metrics(model: Any, measured_numel: int, cfg: Config,
                  extra: dict[str, Any]) -> list[Metric]:
    """Decode-state bytes at L: counted from the state tensors, and the analytic figure."""
    element = next(model.parameters()).element_size()
    measured = measured_numel * cfg.batch_size * element
    analytic = model.state_bytes(cfg.context_len, cfg.batch_size)
    info = {**extra, "reconciled": measured == analytic}
    return [
        Metric(name="state_bytes_measured", unit="bytes", value=float(measured),
               higher_is_better=False, extra=info,
               method="elements of the state tensors after L steps x element size"),
        Metric(name="state_bytes_analytic", unit="bytes", value=float(analytic),
               higher_is_better=False, extra=info,
               method="analytic: the variant's state_size(L) x batch x element size"),
    ]


TASK = tasks.register(Task(
    name="decode_latency", kind="efficiency", version=2, config_cls=Config, run=run,
    headline="latency_ms", doc=__doc__ or "",
))
