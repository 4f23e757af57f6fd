"""Fitting of every synthetic task: the LR search with a task config's settings, and what it
decided, for a row's ``extra``.

AdamW (weight decay on weight matrices only, as each variant declares), linear warm-up then
cosine decay, gradient clipping at 1, a budget in steps. By default a learning rate search per
(variant, task) over ``lr_grid`` by successive halving on the validation split
(:mod:`tasks._fit`); validation every ``eval_every`` steps keeps the best weights, a run stops
once validation is solved, and a run still improving at the end of its budget is marked
``not_converged``. The test split is never looked at until the model is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tasks import _fit
from tasks._fit import Fit
from tasks._seqconfig import TrainConfig, eval_every_of, lr_grid_of
from tasks._seqdata import Data
from tasks._seqscore import evaluate
from tasks.instruments import checkpoints
from tasks.instruments.context import CellContext

AUX_WEIGHT = _fit.AUX_WEIGHT
Score = _fit.Score


def _accuracy_score(ctx: CellContext, pad: int | None) -> Score:
    def score(m: torch.nn.Module, d: Data) -> float:
        return evaluate(m, d, ctx, pad=pad)
    return score


def fit(build: Callable[[], torch.nn.Module], train_set: Data, val_set: Data, ctx: CellContext,
        cfg: TrainConfig, *, pad: int | None = None, score: Score | None = None
        ) -> tuple[torch.nn.Module, float, Fit, dict[str, Any]]:
    """The LR search of the protocol (:func:`tasks._fit.search`) with the settings of a task
    config: ``lr_grid`` (``[lr]`` if empty), ``search``, ``eta``, ``eval_every``, ``patience``
    and ``solved_at`` (which applies to argmax accuracy only: a custom ``score`` such as -bpb
    has no solved level).

    Returns the chosen model, its LR, its :class:`Fit` and a record of every candidate.
    """
    return _fit.search(
        build, train_set, val_set, ctx, grid=lr_grid_of(cfg), steps=cfg.steps,
        batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, warmup_frac=cfg.warmup_frac,
        score=score or _accuracy_score(ctx, pad), eval_every=eval_every_of(cfg),
        patience=cfg.patience, solved_at=cfg.solved_at if score is None else None,
        method=cfg.search, eta=cfg.eta)


def fit_facts(cfg: TrainConfig, lr: float, result: Fit, grid: dict[str, Any],
              val_set: Data) -> dict[str, Any]:
    """What :func:`fit` decided, for a row's ``extra``: the chosen LR, every candidate (curve,
    where it was cut), validation, and whether the chosen run converged."""
    ok, why = _fit.converged(result, cfg.steps)
    return {"lr": lr, "lr_grid": lr_grid_of(cfg), "search": cfg.search, "grid": grid,
            "val_accuracy": result.val_accuracy, "val_sequences": len(val_set[0]),
            "steps_run": result.steps_run, "best_step": result.best_step,
            "stopped_early": result.stopped_early, "solved": result.solved,
            "not_converged": not ok, "convergence": why}


def save_checkpoint(model: torch.nn.Module, ctx: CellContext, task: str,
                    extra: dict[str, Any]) -> str | None:
    """Write the trained model where the runner keeps checkpoints; returns the path."""
    if not ctx.checkpoint_dir:
        return None
    path = checkpoints.path_for(ctx.checkpoint_dir, task, ctx.arch, ctx.arch_config, ctx.seed)
    checkpoints.save(model, path, cell_id=ctx.cell_id, extra={"task": task, **extra})
    return str(path)
