"""The one training protocol of every synthetic task: splits, data cache, fitting, scoring.

A synthetic task supplies ``generate(cfg, n, seed) -> (tokens, targets)`` (both (n, T) int64,
targets -100 where nothing is scored; rows shorter than T are right-padded) and a config that
subclasses :class:`TrainConfig`. Everything else lives here, identical for every variant:

- **Splits.** Train, validation and test sets come from separate seeded streams; validation
  rows seen in train and test rows seen in train or validation are dropped, so the three are
  disjoint. Generated splits are cached on disk under a content hash of (task, version, data
  config, seed), so every variant of a suite trains on the very same arrays.
- **Fitting.** AdamW (weight decay on weight matrices only, as each variant declares), linear
  warm-up then cosine decay, gradient clipping at 1, a budget in steps. By default a learning
  rate search per (variant, task) over ``lr_grid`` by successive halving on the validation
  split (:mod:`tasks._fit`); validation every ``eval_every`` steps keeps the best weights, a
  run stops once validation is solved, and a run still improving at the end of its budget is
  marked ``not_converged``. The test split is never looked at until the model is chosen.
- **Scoring.** Argmax accuracy over scored positions; padding never precedes a real token when
  the model runs (:func:`forward_padded`), so scores do not move with padding side or batch size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks import _fit
from tasks._fit import (
    Fit,
    lr_at,  # noqa: F401  (re-exported: tasks call _seqtask.lr_at)
)
from tasks.base import Metric, MetricSpec
from tasks.instruments import checkpoints
from tasks.instruments.context import CellContext

AUX_WEIGHT = _fit.AUX_WEIGHT
CACHE_ENV = "ARCHBENCH_DATA_CACHE"
PADDING_SIDES = ("right", "left")

ACCURACY = MetricSpec("accuracy", "fraction", True,
                      "argmax accuracy at the scored positions of held-out test sequences")
TRAIN_LOSS = MetricSpec("train_loss", "nats", False,
                        "mean cross-entropy over the last 10% of training steps")
METRICS = (ACCURACY, TRAIN_LOSS)  # what a synthetic task built on run_task reports

Data = tuple[np.ndarray, np.ndarray]
Generate = Callable[[Any, int, int], Data]
Score = _fit.Score
# A task's trivial-strategy baseline: its accuracy on a test set's scored positions and a
# one-line description of the strategy (e.g. "copy the previous bit").
Floor = Callable[[Data], "tuple[float, str]"]


DEFAULT_LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2)  # 1.5 decades, searched by successive halving


@dataclass(frozen=True)
class TrainConfig:
    """Budget and optimizer fields shared by every synthetic task (subclasses override the
    defaults). The token budget of one run is ``steps * batch_size * seq_len``; the LR search
    costs at most twice that (see :mod:`tasks._fit`)."""

    train_size: int = 20_000
    val_size: int = 256  # held out from training for LR choice and early stopping
    test_size: int = 1_000
    steps: int = 1000
    batch_size: int = 64
    lr_grid: tuple[float, ...] = DEFAULT_LR_GRID  # searched per (variant, task); () -> [lr]
    lr: float = 3e-3  # the one LR used when lr_grid is empty
    search: str = "halving"  # "halving": successive halving; "grid": every LR, full budget
    eta: int = 2  # successive halving keeps the best 1/eta of the candidates at each rung
    solved_at: float = 0.99  # validation accuracy that counts as solved: the run stops there
    weight_decay: float = 0.1  # on weight matrices only (each variant declares its groups)
    warmup_frac: float = 0.1
    eval_every: int = 0  # validate every N steps, keep the best weights; 0: steps // 20
    patience: int = 0  # stop after this many validations without improvement; 0: never early
    save_checkpoint: bool = False  # write the chosen model to the cell's checkpoint directory

    def validate(self) -> None:
        check_budget(self)


TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig)) - {
    "train_size", "val_size", "test_size"}  # what does not change the data


def check_budget(cfg: TrainConfig) -> None:
    """The training-budget rules every synthetic task shares; ValueError names the field, the
    allowed values and what it got, in one line."""
    if min(cfg.train_size, cfg.test_size, cfg.steps, cfg.batch_size) < 1:
        raise ValueError("train_size, test_size, steps and batch_size must be >= 1")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or not 0 <= cfg.warmup_frac < 1:
        raise ValueError("lr must be > 0, weight_decay >= 0 and warmup_frac in [0, 1)")
    bad = [v for v in cfg.lr_grid
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0]
    if bad:
        raise ValueError(f"lr_grid: every learning rate must be a number > 0; got {bad[0]!r}")
    seen: set[float] = set()
    for v in cfg.lr_grid:
        if v in seen:
            raise ValueError(f"lr_grid: every learning rate once (a repeat is trained twice); "
                             f"got {v!r} twice")
        seen.add(v)
    if cfg.search not in _fit.SEARCHES:
        raise ValueError(f"search must be one of {', '.join(_fit.SEARCHES)}; "
                         f"got {cfg.search!r}")
    if cfg.eta < 2:
        raise ValueError(f"eta must be an integer >= 2; got {cfg.eta!r}")
    if not 0 < cfg.solved_at <= 1:
        raise ValueError(f"solved_at must be in (0, 1]; got {cfg.solved_at!r}")
    if cfg.val_size < 0 or cfg.eval_every < 0 or cfg.patience < 0:
        raise ValueError("val_size, eval_every and patience must be >= 0")
    if cfg.val_size < 1:
        raise ValueError("val_size must be >= 1: the LR search and convergence check "
                         "read the validation split")


# ---------------------------------------------------------------------------------------------
# splits and the data cache


def stream(seed: int, split: int) -> int:
    """Seed of one split's stream: train 3s, test 3s + 1, validation 3s + 2 (never shared)."""
    return 3 * seed + split


def _drop_seen(data: Data, seen: set[bytes]) -> Data:
    keep = np.array([row.tobytes() not in seen for row in data[0]], dtype=bool)
    return data[0][keep], data[1][keep]


def disjoint_splits(generate: Generate, cfg: Any, seed: int, *, name: str = "task",
                    hint: str = "", allow_empty: bool = False,
                    with_val: bool = False) -> tuple[Data, ...]:
    """(train, test), or (train, val, test) with ``with_val``, from separate seeded streams,
    made disjoint by dropping repeats.

    Raises ValueError when every test sequence also occurs in training (``hint`` says how to
    make the task roomier), unless ``allow_empty``.
    """
    train = generate(cfg, cfg.train_size, stream(seed, 0))
    seen = {row.tobytes() for row in train[0]}
    val = None
    if with_val and cfg.val_size > 0:
        val = _drop_seen(generate(cfg, cfg.val_size, stream(seed, 2)), seen)
        seen |= {row.tobytes() for row in val[0]}
    test = _drop_seen(generate(cfg, cfg.test_size, stream(seed, 1)), seen)
    if not len(test[0]) and not allow_empty:
        raise ValueError(f"{name}: every test sequence also occurs in training"
                         + (f"; {hint}" if hint else ""))
    if not with_val:
        return train, test
    if val is None or not len(val[0]):
        val = (train[0][:0], train[1][:0])
    return train, val, test


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "archbench" / "data")


def generator_source(cfg: Any) -> str:
    """sha256 of the code that makes a task's data: the module defining its config (where its
    generator lives) and the split code here. A generator fix without a version bump then
    still misses the cache instead of reusing stale arrays."""
    module = sys.modules[type(cfg).__module__]
    try:
        code = inspect.getsource(module)
    except (OSError, TypeError):  # no source on disk (frozen or generated): the name stands in
        code = module.__name__
    code += inspect.getsource(disjoint_splits) + inspect.getsource(_drop_seen)
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def data_key(name: str, version: int, cfg: Any, seed: int) -> str:
    """Content hash of what determines a task's data: name, version, data config, seed and the
    generator's source (:func:`generator_source`)."""
    conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in TRAIN_FIELDS}
    blob = json.dumps({"task": name, "version": version, "config": conf, "seed": seed,
                       "source": generator_source(cfg)},
                      sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached(name: str, version: int, cfg: Any, seed: int,
           make: Callable[[], tuple[Data, ...]]) -> tuple[tuple[Data, ...], str]:
    """The splits ``make()`` returns, read from the cache under their content hash if there,
    else made and stored; and the hash.

    The cache is an optimisation only: a missing or unreadable entry is made again, and the
    arrays are identical either way (generation is deterministic per seed).
    """
    key = data_key(name, version, cfg, seed)
    path = cache_dir() / f"{name}-{key}.npz"
    try:
        with np.load(path) as z:
            n = len(z.files) // 2
            return tuple((z[f"x{i}"], z[f"y{i}"]) for i in range(n)), key
    except (OSError, KeyError, ValueError):
        pass
    splits = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        arrays = {f"{xy}{i}": d[j] for i, d in enumerate(splits) for j, xy in enumerate("xy")}
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: concurrent writers leave one whole file
    except OSError:
        pass  # a read-only home still runs, just without the cache
    return splits, key


def cached_splits(generate: Generate, cfg: Any, seed: int, *, name: str, version: int,
                  hint: str = "") -> tuple[tuple[Data, Data, Data], str]:
    """(train, val, test) of :func:`disjoint_splits`, through the cache; and their hash."""
    splits, key = cached(name, version, cfg, seed, lambda: disjoint_splits(
        generate, cfg, seed, name=name, hint=hint, with_val=True))
    train, val, test = splits
    return (train, val, test), key


# ---------------------------------------------------------------------------------------------
# forward passes over padded batches and scoring


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


# ---------------------------------------------------------------------------------------------
# training


def _accuracy_score(ctx: CellContext, pad: int | None) -> Score:
    def score(m: torch.nn.Module, d: Data) -> float:
        return evaluate(m, d, ctx, pad=pad)
    return score


def eval_every_of(cfg: Any) -> int:
    """Steps between validations: the config's, or ``steps // 20`` (at least 1)."""
    return cfg.eval_every or max(1, cfg.steps // 20)


def lr_grid_of(cfg: Any) -> list[float]:
    """The learning rates a config searches: its ``lr_grid``, or ``[lr]`` when that is empty."""
    return list(cfg.lr_grid) or [cfg.lr]


def fit(build: Callable[[], torch.nn.Module], train_set: Data, val_set: Data, ctx: CellContext,
        cfg: Any, *, pad: int | None = None, score: Score | None = None
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


# ---------------------------------------------------------------------------------------------
# metrics and the whole run


def budget_facts(cfg: Any, model: torch.nn.Module, seq_len: int,
                 steps_run: int) -> dict[str, Any]:
    """The budget a trained row records: steps, tokens (budgeted and seen), parameters (the
    chosen LR comes with :func:`fit_facts`)."""
    facts = {
        "steps": cfg.steps, "steps_run": steps_run, "batch_size": cfg.batch_size,
        "seq_len": seq_len, "tokens_seen": steps_run * cfg.batch_size * seq_len,
        "token_budget": cfg.steps * cfg.batch_size * seq_len,
        "num_params": model.num_params(), "num_active_params": model.num_params(active=True),
        "kernel_path": model.kernel_path,
    }
    stats = getattr(model, "compute_stats", dict)()  # e.g. MoD's routed fraction
    if stats:
        facts["compute_stats"] = stats
    return facts


def fit_facts(cfg: Any, lr: float, result: Fit, grid: dict[str, Any],
              val_set: Data) -> dict[str, Any]:
    """What :func:`fit` decided, for a row's ``extra``: the chosen LR, every candidate (curve,
    where it was cut), validation, and whether the chosen run converged."""
    ok, why = _fit.converged(result, cfg.steps)
    return {"lr": lr, "lr_grid": lr_grid_of(cfg), "search": cfg.search, "grid": grid,
            "val_accuracy": result.val_accuracy, "val_sequences": len(val_set[0]),
            "steps_run": result.steps_run, "best_step": result.best_step,
            "stopped_early": result.stopped_early, "solved": result.solved,
            "not_converged": not ok, "convergence": why}


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion (``successes`` of ``n``)."""
    if n < 1:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def baseline_facts(chance: float | None, floor: tuple[float, str] | None) -> dict[str, Any]:
    """Chance and trivial-strategy floor of an accuracy row, for its ``extra``."""
    out: dict[str, Any] = {}
    if chance is not None:
        out["chance"] = float(chance)
    if floor is not None:
        out["floor"], out["floor_strategy"] = float(floor[0]), floor[1]
    return out


def accuracy_metrics(*, cfg: Any, model: torch.nn.Module, test_set: Data, accuracy: float,
                     train_loss: float, seq_len: int, what: str = "scored positions",
                     chance: float | None = None, floor: tuple[float, str] | None = None,
                     **more: Any) -> list[Metric]:
    """The accuracy and train_loss rows of a synthetic task, with the budget, chance, floor
    and a Wilson 95% interval over the scored test positions in ``extra``."""
    n_scored = int((test_set[1] != -100).sum())
    steps_run = more.pop("steps_run", cfg.steps)
    low, high = wilson(accuracy * n_scored, n_scored)
    extra = {**budget_facts(cfg, model, seq_len, steps_run),
             "test_sequences": len(test_set[0]), **baseline_facts(chance, floor),
             "wilson95": [low, high], **more}
    return [
        Metric(name=ACCURACY.name, unit=ACCURACY.unit, value=accuracy,
               higher_is_better=ACCURACY.higher_is_better,
               method=f"argmax at {n_scored} {what} of held-out sequences",
               n_samples=n_scored, extra=extra),
        Metric(name=TRAIN_LOSS.name, unit=TRAIN_LOSS.unit, value=train_loss,
               higher_is_better=TRAIN_LOSS.higher_is_better, method=TRAIN_LOSS.doc,
               extra=extra),
    ]


def save_checkpoint(model: torch.nn.Module, ctx: CellContext, task: str,
                    extra: dict[str, Any]) -> str | None:
    """Write the trained model where the runner keeps checkpoints; returns the path."""
    if not ctx.checkpoint_dir:
        return None
    path = checkpoints.path_for(ctx.checkpoint_dir, task, ctx.arch, ctx.arch_config, ctx.seed)
    checkpoints.save(model, path, cell_id=ctx.cell_id, extra={"task": task, **extra})
    return str(path)


def run_task(cfg: Any, ctx: CellContext, generate: Generate, *, name: str, vocab_size: int,
             seq_len: int, what: str = "scored positions", hint: str = "", version: int = 1,
             pad: int | None = None, chance: float | None = None,
             floor: Floor | None = None) -> list[Metric]:
    """Build, fit and score a model on one synthetic task: the whole ``run`` of most tasks.

    ``chance`` is the accuracy of a uniform guess; ``floor(test_set)`` the accuracy of the
    task's trivial strategy on the test set; both are stored on the accuracy row."""
    (train_set, val_set, test_set), data_hash = cached_splits(
        generate, cfg, ctx.seed, name=name, version=version, hint=hint)
    model, lr, result, grid = fit(lambda: ctx.build_model(vocab_size=vocab_size),
                                  train_set, val_set, ctx, cfg, pad=pad)
    acc = evaluate(model, test_set, ctx, pad=pad)
    more = {**fit_facts(cfg, lr, result, grid, val_set), "data_hash": data_hash}
    if cfg.save_checkpoint:
        more["checkpoint"] = save_checkpoint(model, ctx, name, {"lr": lr, "accuracy": acc})
    return accuracy_metrics(cfg=cfg, model=model, test_set=test_set, accuracy=acc,
                            train_loss=result.train_loss, seq_len=seq_len, what=what,
                            chance=chance, floor=None if floor is None else floor(test_set),
                            **more)
