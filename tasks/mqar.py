"""Multi-query associative recall (MQAR, Zoology): recall the value bound to each queried key.

A sequence holds ``n_pairs`` key-value pairs, then the same keys queried in a shuffled order:
``k1 v1 ... kn vn | q1 ... qn``. At each query position the model must predict the value bound
to that key. Answers are not fed back as inputs (that would let the last queries be solved by
elimination). The model is trained from scratch on seeded synthetic data and scored by test
accuracy over query positions. Train and test sequences come from separate seeded streams, and
test sequences that also occur in the training set are dropped, so the splits are disjoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, Task

AUX_WEIGHT = _seqtask.AUX_WEIGHT

VERSION = 2  # 2: train/validation/test streams of the shared protocol


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    n_pairs: int = 4  # key-value pairs per sequence; T = 3 * n_pairs
    n_keys: int = 16  # key alphabet size; values use a disjoint alphabet of the same size
    steps: int = 1000  # budget in steps; on a 2-core CPU attention reaches ~0.99 here

    def validate(self) -> None:
        if not 1 <= self.n_pairs <= self.n_keys:
            raise ValueError("n_pairs must be between 1 and n_keys")
        _seqtask.check_budget(self)

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
    """Train and test sets from separate streams; test rows seen in train are removed.

    The test set may come back empty here; :func:`run` refuses that with a clear error.
    """
    return _seqtask.disjoint_splits(generate, cfg, seed, name="mqar", allow_empty=True)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    return _seqtask.lr_at(step, steps=cfg.steps, lr=cfg.lr, warmup_frac=cfg.warmup_frac)


def train(model: torch.nn.Module, cfg: Config, data: tuple[np.ndarray, np.ndarray],
          ctx: CellContext) -> float:
    """AdamW on random minibatches; returns the mean loss of the last 10% of steps."""
    return _seqtask.train_cfg(model, data, ctx, cfg)


evaluate = _seqtask.evaluate  # fraction of query positions whose argmax is the bound value


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    return _seqtask.run_task(
        cfg, ctx, generate, version=VERSION,
        name="mqar", vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        what="query positions",
        hint="raise n_keys or n_pairs so the task has enough distinct sequences")


TASK = tasks.register(Task(
    name="mqar", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=_seqtask.METRICS,
))
