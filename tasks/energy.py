"""Energy per token of inference ``forward`` over (B, T), from a hardware energy meter.

NVML's total-energy counter on NVIDIA GPUs, RAPL on CPUs that expose it. The workload is looped
for a window of at least ``min_window_s`` and an idle baseline of the same length is measured.
Where no meter exists the row is stored as ``unavailable`` with the reason, never as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import tasks
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext
from tasks.instruments.energy import EnergyUnavailable, measure_energy, select_meter


@dataclass(frozen=True)
class Config:
    batch_size: int = 1
    seq_len: int = 256
    min_window_s: float = 1.0  # meters update every 20-100 ms: short windows are noise
    checkpoint: str = ""  # a checkpoint file or "task:NAME" (task:lm_bpb); "": a fresh model

    def validate(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1 or self.min_window_s <= 0:
            raise ValueError("batch_size, seq_len must be >= 1 and min_window_s > 0")


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    extra = {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
             "checkpoint": ctx.checkpoint_path(cfg.checkpoint)}
    try:
        meter = select_meter(ctx.device)
    except EnergyUnavailable as err:
        return [NET.metric(None, status="unavailable", error=str(err), extra=extra)]
    model = ctx.model(cfg.checkpoint)
    tokens = ctx.random_tokens(cfg.batch_size, cfg.seq_len, model.config["vocab_size"])
    with torch.inference_mode():
        model(tokens)
        m = measure_energy(lambda: model(tokens), meter, min_window_s=cfg.min_window_s,
                           sync=ctx.sync)
    n_tokens = m.iterations * cfg.batch_size * cfg.seq_len
    info = {**extra, "window_s": m.window_s,
            "iterations": m.iterations, "gross_j": m.gross_joules,
            "baseline_j": m.baseline_joules,
            "baseline_window_s": m.baseline_window_s, "meter_samples": m.samples,
            "domains": list(m.domains)}
    return [
        NET.metric(m.net_joules / n_tokens, method=f"{m.method}, net of idle baseline",
               n_samples=m.samples, extra=info),
        GROSS.metric(m.gross_joules / n_tokens, method=f"{m.method}, gross", n_samples=m.samples,
               extra=info),
    ]


NET = MetricSpec("energy_per_token_j", "J/token", False,
                 "energy per token of a forward pass, net of the idle baseline")
GROSS = MetricSpec("energy_per_token_gross_j", "J/token", False,
                   "energy per token of a forward pass, idle baseline included")


TASK = tasks.register(Task(
    name="energy", kind="efficiency", version=1, config_cls=Config, run=run,
    headline="energy_per_token_j", doc=__doc__ or "", needs_causal=False,
    metrics=(NET, GROSS), sweep_key="seq_len",
))
