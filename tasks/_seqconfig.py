"""The config every synthetic task subclasses: split sizes, training budget and optimizer.

:class:`TrainConfig` is what the protocol (:mod:`tasks._seqtask`) reads; a task's config adds
its data fields. :data:`TRAIN_FIELDS` are the fields that never change the data (the data cache
key leaves them out, :mod:`tasks._seqdata`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tasks import _fit

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


def eval_every_of(cfg: TrainConfig) -> int:
    """Steps between validations: the config's, or ``steps // 20`` (at least 1)."""
    return cfg.eval_every or max(1, cfg.steps // 20)


def lr_grid_of(cfg: TrainConfig) -> list[float]:
    """The learning rates a config searches: its ``lr_grid``, or ``[lr]`` when that is empty."""
    return list(cfg.lr_grid) or [cfg.lr]


def _check_grid(cfg: TrainConfig) -> None:
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


def check_budget(cfg: TrainConfig) -> None:
    """The training-budget rules every synthetic task shares; ValueError names the field, the
    allowed values and what it got, in one line."""
    if min(cfg.train_size, cfg.test_size, cfg.steps, cfg.batch_size) < 1:
        raise ValueError("train_size, test_size, steps and batch_size must be >= 1")
    if cfg.lr <= 0 or cfg.weight_decay < 0 or not 0 <= cfg.warmup_frac < 1:
        raise ValueError("lr must be > 0, weight_decay >= 0 and warmup_frac in [0, 1)")
    _check_grid(cfg)
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
