"""Scoring of every synthetic task: padded forward passes, argmax accuracy and the rows.

Argmax accuracy over scored positions; padding never precedes a real token when the model runs
(:func:`forward_padded`), so scores do not move with padding side or batch size. A trained row
records its budget, chance, trivial-strategy floor and a Wilson 95% interval in ``extra``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from tasks._seqconfig import TrainConfig
from tasks._seqdata import Data
from tasks.base import Metric, MetricSpec
from tasks.instruments.context import CellContext

PADDING_SIDES = ("right", "left")

ACCURACY = MetricSpec("accuracy", "fraction", True,
                      "argmax accuracy at the scored positions of held-out test sequences")
TRAIN_LOSS = MetricSpec("train_loss", "nats", False,
                        "mean cross-entropy over the last 10% of training steps")
METRICS = (ACCURACY, TRAIN_LOSS)  # what a synthetic task built on run_task reports


def forward_padded(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor,
                   padding_side: str = "right") -> torch.Tensor:
    """Logits (B, T, V) of a padded batch, laid out like ``x``, in which no real token ever
    sees a pad.

    A causal model cannot see right padding; left padding would run through a recurrent state
    (or be attended to) before the first real token. Left-padded rows are therefore shifted so
    their tokens start at position 0, run, and their logits shifted back. Pad positions' logits
    are whatever the model makes of them and must not be scored.
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if padding_side == "right":
        return model(x)
    width = x.shape[1]
    shift = (width - lengths).tolist()
    packed = torch.stack([row.roll(-s) for row, s in zip(x, shift, strict=True)])
    logits = model(packed)
    return torch.stack([row.roll(s, dims=0) for row, s in zip(logits, shift, strict=True)])


def pad_rows(rows: list[np.ndarray], pad: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D rows of different lengths into (B, max) with ``pad`` on ``side``; lengths."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        if side == "right":
            out[i, : len(r)] = r
        else:
            out[i, width - len(r) :] = r
    return out, np.array([len(r) for r in rows], dtype=np.int64)


def lengths_of(tokens: np.ndarray, pad: int | None) -> np.ndarray:
    """Real length of each right-padded row: up to the last non-pad token (all of T if none)."""
    if pad is None:
        return np.full(len(tokens), tokens.shape[1], dtype=np.int64)
    real = tokens != pad
    last = np.where(real.any(1), tokens.shape[1] - np.argmax(real[:, ::-1], axis=1), 0)
    return last.astype(np.int64)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: Data, ctx: CellContext, batch_size: int = 256,
             *, padding_side: str = "right", pad: int | None = None) -> float:
    """Fraction of scored positions (target != -100) whose argmax prediction is the target.

    ``data`` is right-padded with ``pad`` (if it has padding); ``padding_side="left"``
    re-pads every batch on the left first, as a left-padding data loader would deliver it.
    """
    correct = total = 0
    lengths = lengths_of(data[0], pad)
    for start in range(0, len(data[0]), batch_size):
        x = data[0][start : start + batch_size]
        y = data[1][start : start + batch_size]
        n = lengths[start : start + batch_size]
        width = int(n.max())
        x, y = x[:, :width], y[:, :width]  # a batch is only as wide as its longest row
        if padding_side == "left":
            shift = width - n
            x = np.stack([np.roll(r, s) for r, s in zip(x, shift, strict=True)])
            y = np.stack([np.roll(r, s) for r, s in zip(y, shift, strict=True)])
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(ctx.torch_device)
        yt = torch.from_numpy(np.ascontiguousarray(y)).to(ctx.torch_device)
        pred = forward_padded(model, xt, torch.from_numpy(n), padding_side).argmax(-1)
        mask = yt != -100
        correct += int((pred[mask] == yt[mask]).sum())
        total += int(mask.sum())
    if not total:
        raise ValueError("nothing to score: the evaluation set has no scored positions")
    return correct / total


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion (``successes`` of ``n``)."""
    if n < 1:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def budget_facts(cfg: TrainConfig, model: torch.nn.Module, seq_len: int,
                 steps_run: int) -> dict[str, Any]:
    """The budget a trained row records: steps, tokens (budgeted and seen), parameters (the
    chosen LR comes with :func:`tasks._seqtrain.fit_facts`; the kernel path with the cell)."""
    facts = {
        "steps": cfg.steps, "steps_run": steps_run, "batch_size": cfg.batch_size,
        "seq_len": seq_len, "tokens_seen": steps_run * cfg.batch_size * seq_len,
        "token_budget": cfg.steps * cfg.batch_size * seq_len,
        "num_params": model.num_params(), "num_active_params": model.num_params(active=True),
    }
    stats = getattr(model, "compute_stats", dict)()  # e.g. MoD's routed fraction
    if stats:
        facts["compute_stats"] = stats
    return facts


def baseline_facts(chance: float | None, floor: tuple[float, str] | None) -> dict[str, Any]:
    """Chance and trivial-strategy floor of an accuracy row, for its ``extra``."""
    out: dict[str, Any] = {}
    if chance is not None:
        out["chance"] = float(chance)
    if floor is not None:
        out["floor"], out["floor_strategy"] = float(floor[0]), floor[1]
    return out


def accuracy_metrics(*, cfg: TrainConfig, model: torch.nn.Module, test_set: Data,
                     accuracy: float, train_loss: float, seq_len: int,
                     what: str = "scored positions", chance: float | None = None,
                     floor: tuple[float, str] | None = None, **more: Any) -> list[Metric]:
    """The accuracy and train_loss rows of a synthetic task, with the budget, chance, floor
    and a Wilson 95% interval over the scored test positions in ``extra``."""
    n_scored = int((test_set[1] != -100).sum())
    steps_run = more.pop("steps_run", cfg.steps)
    low, high = wilson(accuracy * n_scored, n_scored)
    extra = {**budget_facts(cfg, model, seq_len, steps_run),
             "test_sequences": len(test_set[0]), **baseline_facts(chance, floor),
             "wilson95": [low, high], **more}
    return [
        ACCURACY.metric(accuracy, method=f"argmax at {n_scored} {what} of held-out sequences",
                        n_samples=n_scored, extra=extra),
        TRAIN_LOSS.metric(train_loss, method=TRAIN_LOSS.doc, extra=extra),
    ]
