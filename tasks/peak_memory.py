"""Peak memory of one inference ``forward`` over (B, T), beside analytic parameter and state bytes.

CPU: peak resident memory of the isolated cell process during the forward pass, above the
baseline after the model is built (Linux VmHWM reset through /proc/self/clear_refs).
CUDA: allocator peak allocated and reserved bytes. The analytic figures are exact counts:
parameter bytes, and the decoding state held after T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import tasks
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext
from tasks.instruments.memory import cpu_peak_available, measure_peak

MIB = 2**20
PEAK, PARAMS, STATE = SPECS = (
    MetricSpec("peak_memory_mib", "MiB", False, "peak memory of a forward pass above the "
               "baseline before it (RSS on CPU, the allocator's peak on CUDA)", swept=True),
    MetricSpec("param_bytes", "bytes", False, "analytic: parameter elements x element size"),
    MetricSpec("state_bytes", "bytes", False,
               "analytic: decoding state elements after seq_len tokens x element size"),
)
# Freed buffers go back to the OS so the phase's peak RSS is visible (docs/METHOD.md, Memory).
# Only memory cells get this: it roughly doubles the cost of a training step.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


@dataclass(frozen=True)
class Config:
    batch_size: int = 1
    seq_len: int = 512
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("batch_size and seq_len must be >= 1")


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    model = ctx.model(cfg.checkpoint)
    tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len, model.config["vocab_size"])
    extra = {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
             "checkpoint": ctx.checkpoint_path(cfg.checkpoint)}
    analytic = [
        PARAMS.metric(float(sum(p.numel() * p.element_size() for p in model.parameters())),
                      method="analytic: sum of parameter numel x element size", extra=extra),
        STATE.metric(float(model.state_bytes(cfg.seq_len, cfg.batch_size)),
                     method="analytic: decoding state elements after seq_len tokens x element "
                            "size", extra=extra),
    ]
    reason = cpu_peak_available() if ctx.torch_device.type == "cpu" else None
    if reason is not None:
        peak = PEAK.metric(None, status="unavailable", error=reason, extra=extra)
        return [peak, *analytic]
    with torch.inference_mode():
        model(tokens)  # warm-up: first-call allocations are not the phase's peak
        reading = measure_peak(lambda: model(tokens), ctx.device)
    peak = PEAK.metric(
        reading.peak_bytes_above_baseline / MIB, method=reading.method,
        extra={**extra, "baseline_bytes": reading.baseline_bytes,
               "peak_bytes": reading.peak_bytes,
               "max_allocated_bytes": getattr(reading, "max_allocated_bytes", None),
               "max_reserved_bytes": getattr(reading, "max_reserved_bytes", None)},
    )
    return [peak, *analytic]


TASK = tasks.register(Task(
    name="peak_memory", kind="efficiency", version=1, config_cls=Config, run=run,
    headline="peak_memory_mib", doc=__doc__ or "", needs_causal=False, env=MALLOC_ENV,
    metrics=SPECS, sweep_key="seq_len",
))
