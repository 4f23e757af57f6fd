"""Decode latency: the latency of one ``step`` against a state that holds exactly L tokens.

The context is built as a server builds it, with one parallel ``model.prefill`` over the L
tokens (its state equals the one L single steps would reach). Every timed call is then one
``step`` of the next token from that SAME state, the returned state discarded, so each call
decodes at context exactly L: the context does not grow during timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import tasks
from architectures import state_numel
from tasks._timed import LATENCY_SPECS, TimingConfig, latency_metrics
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext
from tasks.instruments.timing import in_processes, pooled

STATE_SPECS = MEASURED, ANALYTIC = (
    MetricSpec("state_bytes_measured", "bytes", False,
               "elements of the decode-state tensors after prefilling L tokens x element size",
               swept=True),
    MetricSpec("state_bytes_analytic", "bytes", False,
               "the variant's analytic state_size(L) x batch x element size"),
)


@dataclass(frozen=True)
class Config(TimingConfig):
    context_len: int = 256  # L: tokens in the state every timed step decodes against
    batch_size: int = 1
    n_samples: int = 15
    warmup: int = 3
    min_sample_s: float = 0.005
    max_total_s: float = 20.0
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.context_len < 0 or self.batch_size < 1 or self.n_samples < 1:
            raise ValueError("context_len must be >= 0, batch_size and n_samples >= 1")
        super().validate()


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    def measure() -> tuple[Any, dict[str, Any]]:  # in a fresh process: model, state, timing
        model = ctx.model(cfg.checkpoint)
        vocab = model.config["vocab_size"]
        context = ctx.random_tokens(cfg.batch_size, cfg.context_len, vocab)
        with torch.inference_mode():
            _, state = model.prefill(context)  # one parallel pass; L = 0 gives init_state
            next_tok = ctx.random_tokens(cfg.batch_size, 1, vocab, offset=1)

            def one_step() -> None:
                model.step(next_tok, state)  # from the state at L every call; the new dropped

            timing = cfg.time(one_step, ctx)
        element = next(model.parameters()).element_size()
        return timing, {"measured": state_numel(state) * cfg.batch_size * element,
                        "analytic": model.state_bytes(cfg.context_len, cfg.batch_size)}

    results = in_processes(cfg.processes, measure)
    facts = results[0][1]
    extra = {
        "checkpoint": ctx.checkpoint_path(cfg.checkpoint),
        "batch_size": cfg.batch_size, "context_len": cfg.context_len,
        "context_build": "prefill", "processes": len(results),
    }
    return [*latency_metrics(pooled([t for t, _ in results]), cfg.batch_size, extra),
            *state_metrics(facts["measured"], facts["analytic"], extra)]


def state_metrics(measured: int, analytic: int, extra: dict[str, Any]) -> list[Metric]:
    """Decode-state bytes at L: counted from the state tensors, and the analytic figure."""
    info = {**extra, "reconciled": measured == analytic}
    return [
        MEASURED.metric(float(measured), extra=info, method=(
            "elements of the state tensors after prefilling L tokens x element size")),
        ANALYTIC.metric(float(analytic), extra=info,
                        method="analytic: the variant's state_size(L) x batch x element size"),
    ]


TASK = tasks.register(Task(
    name="decode_latency", kind="efficiency", version=4, config_cls=Config, run=run,
    headline="latency_ms", doc=__doc__ or "", metrics=(*LATENCY_SPECS, *STATE_SPECS),
    sweep_key="context_len",
))
