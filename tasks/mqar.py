"""Multi-query associative recall (MQAR, Zoology): recall the value bound to each queried key.

A sequence holds ``n_pairs`` key-value pairs, then the same keys queried in a shuffled order:
``k1 v1 ... kn vn | q1 ... qn``. At each query position the model must predict the value bound
to that key. Answers are not fed back as inputs (that would let the last queries be solved by
elimination). The model is trained from scratch on seeded synthetic data and scored by test
accuracy over query positions. Train and test sequences come from separate seeded streams, and
test sequences that also occur in the training set are dropped, so the splits are disjoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import tasks
from harness.context import CellContext
from tasks.base import Metric, Task

AUX_WEIGHT = 0.01  # Switch Transformer's load-balancing coefficient


@dataclass(frozen=True)
class Config:
    n_pairs: int = 4  # key-value pairs per sequence; T = 3 * n_pairs
    n_keys: int = 16  # key alphabet size; values use a disjoint alphabet of the same size
    train_size: int = 20_000
    test_size: int = 1_000
    steps: int = 1000  # budget in steps; on a 2-core CPU attention reaches ~0.99 here
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_frac: float = 0.1

    def validate(self) -> None:
        if not 1 <= self.n_pairs <= self.n_keys:
            raise ValueError("n_pairs must be between 1 and n_keys")
        if min(self.train_size, self.test_size, self.steps, self.batch_size) < 1:
            raise ValueError("train_size, test_size, steps and batch_size must be >= 1")

    @property
    def seq_len(self) -> int:
        return 3 * self.n_pairs

    @property
    def vocab_size(self) -> int:
        return 2 * self.n_keys


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T) with -100 where nothing is scored."""
    rng = np.random.default_rng(seed)
    keys = np.argsort(rng.random((n, cfg.n_keys)), axis=1)[:, : cfg.n_pairs]  # distinct keys
    values = rng.integers(0, cfg.n_keys, (n, cfg.n_pairs)) + cfg.n_keys
    order = np.argsort(rng.random((n, cfg.n_pairs)), axis=1)
    q_keys = np.take_along_axis(keys, order, axis=1)
    q_vals = np.take_along_axis(values, order, axis=1)
    seq = np.empty((n, cfg.seq_len), dtype=np.int64)
    seq[:, 0 : 2 * cfg.n_pairs : 2] = keys
    seq[:, 1 : 2 * cfg.n_pairs : 2] = values
    seq[:, 2 * cfg.n_pairs :] = q_keys
    targets = np.full_like(seq, -100)
    targets[:, 2 * cfg.n_pairs :] = q_vals  # logits at a query position name its value
    return seq, targets


def splits(cfg: Config, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Train and test sets from separate streams; test rows seen in train are removed."""
    train = generate(cfg, cfg.train_size, seed=2 * seed)
    test = generate(cfg, cfg.test_size, seed=2 * seed + 1)
    seen = {row.tobytes() for row in train[0]}
    keep = np.array([row.tobytes() not in seen for row in test[0]], dtype=bool)
    return train, (test[0][keep], test[1][keep])


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: torch.nn.Module, cfg: Config, data: tuple[np.ndarray, np.ndarray],
          ctx: CellContext) -> float:
    """AdamW on random minibatches; returns the mean loss of the last 10% of steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(ctx.seed + 17)
    x_all = torch.from_numpy(data[0])
    y_all = torch.from_numpy(data[1])
    losses = []
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = torch.from_numpy(rng.integers(0, len(x_all), cfg.batch_size))
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
    tail = losses[-max(1, cfg.steps // 10) :]
    return float(np.mean(tail))


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray], ctx: CellContext,
             batch_size: int = 256) -> float:
    """Fraction of query positions whose argmax prediction is the bound value."""
    correct = total = 0
    for start in range(0, len(data[0]), batch_size):
        x = torch.from_numpy(data[0][start : start + batch_size]).to(ctx.torch_device)
        y = torch.from_numpy(data[1][start : start + batch_size]).to(ctx.torch_device)
        pred = model(x).argmax(-1)
        mask = y != -100
        correct += int((pred[mask] == y[mask]).sum())
        total += int(mask.sum())
    return correct / total


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    model = ctx.build_model(vocab_size=cfg.vocab_size)
    train_set, test_set = splits(cfg, ctx.seed)
    if len(test_set[0]) == 0:
        raise ValueError("mqar: every test sequence also occurs in training; raise n_keys or "
                         "n_pairs so the task has enough distinct sequences")
    final_loss = train(model, cfg, train_set, ctx)
    acc = evaluate(model, test_set, ctx)
    extra = {
        "steps": cfg.steps, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len, "lr": cfg.lr,
        "test_sequences": len(test_set[0]), "num_params": model.num_params(),
        "kernel_path": model.kernel_path,
    }
    n_queries = len(test_set[0]) * cfg.n_pairs
    return [
        Metric(name="accuracy", unit="fraction", value=acc, higher_is_better=True,
               method=f"argmax at {n_queries} query positions of held-out sequences",
               n_samples=n_queries, extra=extra),
        Metric(name="train_loss", unit="nats", value=final_loss, higher_is_better=False,
               method="mean cross-entropy over the last 10% of training steps", extra=extra),
    ]


TASK = tasks.register(Task(
    name="mqar", kind="accuracy", version=1, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "",
))
