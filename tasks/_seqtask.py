"""The one training protocol of every synthetic task: splits, data cache, fitting, scoring.

A synthetic task supplies ``generate(cfg, n, seed) -> (tokens, targets)`` (both (n, T) int64,
targets -100 where nothing is scored; rows shorter than T are right-padded), a config that
subclasses :class:`TrainConfig`, and a :class:`Problem` per config; :func:`register_generated`
registers it under its name, given once. Everything else is identical for every variant:

- **Splits** and the on-disk data cache: :mod:`tasks._seqdata`.
- **Fitting** (AdamW, warm-up and cosine decay, LR search by successive halving on the
  validation split, early stopping, convergence): :mod:`tasks._seqtrain`.
- **Scoring** (argmax accuracy over scored positions, padding-safe forward passes, the rows
  and their ``extra``): :mod:`tasks._seqscore`.

The names of those modules are re-exported here: tasks call ``_seqtask.fit``,
``_seqtask.evaluate``, ``_seqtask.TrainConfig`` and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tasks
from tasks._fit import Fit, lr_at
from tasks._seqconfig import (
    DEFAULT_LR_GRID,
    TRAIN_FIELDS,
    TrainConfig,
    check_budget,
    eval_every_of,
    lr_grid_of,
)
from tasks._seqdata import (
    CACHE_ENV,
    Data,
    Floor,
    Generate,
    cache_dir,
    cached,
    cached_splits,
    data_key,
    disjoint_splits,
    generator_source,
    stream,
)
from tasks._seqscore import (
    ACCURACY,
    METRICS,
    PADDING_SIDES,
    TRAIN_LOSS,
    accuracy_metrics,
    baseline_facts,
    budget_facts,
    evaluate,
    forward_padded,
    lengths_of,
    pad_rows,
    wilson,
)
from tasks._seqtrain import AUX_WEIGHT, Score, fit, fit_facts, save_checkpoint
from tasks.base import Metric, Task
from tasks.instruments.context import CellContext

__all__ = [
    "ACCURACY", "AUX_WEIGHT", "CACHE_ENV", "DEFAULT_LR_GRID", "METRICS", "PADDING_SIDES",
    "TRAIN_FIELDS", "TRAIN_LOSS", "Data", "Fit", "Floor", "Generate", "Problem", "Score",
    "TrainConfig", "accuracy_metrics", "baseline_facts", "budget_facts", "cache_dir", "cached",
    "cached_splits", "check_budget", "data_key", "disjoint_splits", "eval_every_of", "evaluate",
    "fit", "fit_facts", "forward_padded", "generator_source", "lengths_of", "lr_at",
    "lr_grid_of", "pad_rows", "register_generated", "run_task", "save_checkpoint", "stream",
    "wilson",
]


@dataclass(frozen=True)
class Problem:
    """What a synthetic task supplies for one config: its generator and model size, how its
    scored positions are described, and its baselines.

    ``what`` names the scored positions in the accuracy row's method; ``hint`` says how to make
    the task roomier when every test sequence also occurs in training; ``pad`` is the padding
    token of right-padded rows (None: no padding); ``chance`` is the accuracy of a uniform
    guess, ``floor(test_set)`` that of the task's trivial strategy on the test set.
    """

    generate: Generate
    vocab_size: int
    seq_len: int
    what: str = "scored positions"
    hint: str = ""
    pad: int | None = None
    chance: float | None = None
    floor: Floor | None = None


def run_task(cfg: TrainConfig, ctx: CellContext, problem: Problem, *, name: str,
             version: int = 1) -> list[Metric]:
    """Build, fit and score a model on one synthetic task: the whole ``run`` of most tasks.

    ``chance`` and ``floor(test_set)`` of ``problem`` are stored on the accuracy row."""
    p = problem
    (train_set, val_set, test_set), data_hash = cached_splits(
        p.generate, cfg, ctx.seed, name=name, version=version, hint=p.hint)
    model, lr, result, grid = fit(lambda: ctx.build_model(vocab_size=p.vocab_size),
                                  train_set, val_set, ctx, cfg, pad=p.pad)
    acc = evaluate(model, test_set, ctx, pad=p.pad)
    more = {**fit_facts(cfg, lr, result, grid, val_set), "data_hash": data_hash}
    if cfg.save_checkpoint:
        more["checkpoint"] = save_checkpoint(model, ctx, name, {"lr": lr, "accuracy": acc})
    return accuracy_metrics(cfg=cfg, model=model, test_set=test_set, accuracy=acc,
                            train_loss=result.train_loss, seq_len=p.seq_len, what=p.what,
                            chance=p.chance,
                            floor=None if p.floor is None else p.floor(test_set), **more)


def register_generated(name: str, *, version: int, config_cls: type[TrainConfig],
                       problem: Callable[[Any], Problem], doc: str, **task: Any) -> Task:
    """Register the synthetic task ``name`` (named once): an accuracy task whose ``run`` is
    :func:`run_task` on ``problem(cfg)``, reporting :data:`METRICS` with ``accuracy`` as its
    headline. ``task`` passes further :class:`Task` fields (e.g. ``needs_causal``)."""

    def run(cfg: TrainConfig, ctx: CellContext) -> list[Metric]:
        return run_task(cfg, ctx, problem(cfg), name=name, version=version)

    return tasks.register(Task(
        name=name, kind="accuracy", version=version, config_cls=config_cls, run=run,
        headline="accuracy", doc=doc, metrics=METRICS, **task))
