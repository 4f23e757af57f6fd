"""Shared machinery of the synthetic sequence tasks: splits, training loop, scoring, metrics.

A synthetic task supplies ``generate(cfg, n, seed) -> (tokens, targets)`` (both (n, T) int64,
targets -100 where nothing is scored) and a config with ``train_size``, ``test_size``,
``steps``, ``batch_size``, ``lr``, ``weight_decay`` and ``warmup_frac``. Everything else (disjoint
splits, AdamW with warm-up and cosine decay, argmax accuracy, Metric rows) lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.context import CellContext
from tasks.base import Metric

AUX_WEIGHT = 0.01  # Switch Transformer's load-balancing coefficient

Data = tuple[np.ndarray, np.ndarray]


def check_budget(cfg: Any) -> None:
    """The training-budget fields every synthetic task shares; ValueError names the rule."""
    if min(cfg.train_size, cfg.test_size, cfg.steps, cfg.batch_size) < 1:
        raise ValueError("train_size, test_size, steps and batch_size must be >= 1")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or not 0 <= cfg.warmup_frac < 1:
        raise ValueError("lr must be > 0, weight_decay >= 0 and warmup_frac in [0, 1)")


def disjoint_splits(generate: Callable[[Any, int, int], Data], cfg: Any, seed: int, *,
                    name: str = "task", hint: str = "",
                    allow_empty: bool = False) -> tuple[Data, Data]:
    """Train and test sets from separate seeded streams; test rows seen in train are removed.

    Raises ValueError when every test sequence also occurs in training (``hint`` says how to
    make the task roomier), unless ``allow_empty``.
    """
    train = generate(cfg, cfg.train_size, 2 * seed)
    test = generate(cfg, cfg.test_size, 2 * seed + 1)
    seen = {row.tobytes() for row in train[0]}
    keep = np.array([row.tobytes() not in seen for row in test[0]], dtype=bool)
    if not keep.any() and not allow_empty:
        raise ValueError(f"{name}: every test sequence also occurs in training"
                         + (f"; {hint}" if hint else ""))
    return train, (test[0][keep], test[1][keep])


def lr_at(step: int, *, steps: int, lr: float, warmup_frac: float) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: torch.nn.Module, data: Data, ctx: CellContext, *, steps: int, batch_size: int,
          lr: float, weight_decay: float, warmup_frac: float) -> float:
    """AdamW on random minibatches; returns the mean loss of the last 10% of steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(ctx.seed + 17)
    x_all = torch.from_numpy(data[0])
    y_all = torch.from_numpy(data[1])
    losses = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps=steps, lr=lr, warmup_frac=warmup_frac)
        idx = torch.from_numpy(rng.integers(0, len(x_all), batch_size))
        x, y = x_all[idx].to(ctx.torch_device), y_all[idx].to(ctx.torch_device)
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        losses.append(loss.item())
        aux = getattr(model, "aux_loss", None)  # MoE load balancing (0 for dense models)
        if aux is not None:
            loss = loss + AUX_WEIGHT * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    tail = losses[-max(1, steps // 10) :]
    return float(np.mean(tail))


def train_cfg(model: torch.nn.Module, data: Data, ctx: CellContext, cfg: Any) -> float:
    """:func:`train` with the optimizer settings read from a task config."""
    return train(model, data, ctx, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: Data, ctx: CellContext,
             batch_size: int = 256) -> float:
    """Fraction of scored positions (target != -100) whose argmax prediction is the target."""
    correct = total = 0
    for start in range(0, len(data[0]), batch_size):
        x = torch.from_numpy(data[0][start : start + batch_size]).to(ctx.torch_device)
        y = torch.from_numpy(data[1][start : start + batch_size]).to(ctx.torch_device)
        pred = model(x).argmax(-1)
        mask = y != -100
        correct += int((pred[mask] == y[mask]).sum())
        total += int(mask.sum())
    return correct / total


def accuracy_metrics(*, cfg: Any, model: torch.nn.Module, test_set: Data, accuracy: float,
                     train_loss: float, seq_len: int, what: str = "scored positions",
                     **more: Any) -> list[Metric]:
    """The accuracy and train_loss rows of a synthetic task, with the budget in ``extra``."""
    n_scored = int((test_set[1] != -100).sum())
    extra = {
        "steps": cfg.steps, "batch_size": cfg.batch_size, "seq_len": seq_len,
        "tokens_seen": cfg.steps * cfg.batch_size * seq_len, "lr": cfg.lr,
        "test_sequences": len(test_set[0]), "num_params": model.num_params(),
        "kernel_path": model.kernel_path, **more,
    }
    return [
        Metric(name="accuracy", unit="fraction", value=accuracy, higher_is_better=True,
               method=f"argmax at {n_scored} {what} of held-out sequences",
               n_samples=n_scored, extra=extra),
        Metric(name="train_loss", unit="nats", value=train_loss, higher_is_better=False,
               method="mean cross-entropy over the last 10% of training steps", extra=extra),
    ]


def run_task(cfg: Any, ctx: CellContext, generate: Callable[[Any, int, int], Data], *,
             name: str, vocab_size: int, seq_len: int, what: str = "scored positions",
             hint: str = "") -> list[Metric]:
    """Build, train and score a model on one synthetic task: the whole ``run`` of most tasks."""
    model = ctx.build_model(vocab_size=vocab_size)
    train_set, test_set = disjoint_splits(generate, cfg, ctx.seed, name=name, hint=hint)
    final_loss = train_cfg(model, train_set, ctx, cfg)
    acc = evaluate(model, test_set, ctx)
    return accuracy_metrics(cfg=cfg, model=model, test_set=test_set, accuracy=acc,
                            train_loss=final_loss, seq_len=seq_len, what=what)
