"""Training and the learning-rate search every trained task shares.

One fixed learning rate picks winners: the 2-layer transformer scores 0.10 on induction heads
at 3e-3 and 1.00 at 1e-3 (same budget). So the default is a search per (variant, task), as
Zoology and MAD sweep LRs per model, made affordable by **successive halving** (Jamieson &
Talwalkar 2016; the resumable form of Hyperband's inner loop, Li et al. 2018):

- every candidate LR trains the same seeded initialisation on the same minibatch order, with
  the warm-up and cosine schedule of the **full** step budget, so a candidate that survives to
  the end is exactly a full-budget run at its LR;
- after rung ``r`` (``steps / eta**(R-1-r)`` steps) the best ``1/eta`` of the candidates by
  validation score go on, the rest are cut there. With 4 candidates and ``eta = 2`` the rungs
  end at steps/4, steps/2 and steps, and the search costs 4/4 + 2/4 + 1/2 = 2 full runs;
- candidates whose validation scores lie within ``TIE`` of the best cannot be told apart by
  validation; among them the smaller LR goes on first. Before a phase change (induction heads,
  MQAR, parity) every LR sits at the floor, and it is the large LRs that stall there: measured
  on this backbone, the 2-layer transformer's induction heads stay at chance at 3e-3 and form
  at 1e-3; on MQAR (T 64, 16 pairs) 1e-3 solves at ~1,400 steps and 3e-3 only starts rising
  at ~1,800. Ranking tied candidates by training loss instead kept 3e-3 and 1e-2 and cut
  1e-3 at the first rung (MQAR test 0.28 instead of a solve);
- validation runs every ``eval_every`` steps; a candidate whose validation score reaches
  ``solved_at`` is solved and ends the search (nothing can beat it on validation), which is
  where most of the budget is saved on easy tasks;
- the test split is never looked at here.

Every candidate's validation curve, where it was cut and whether it solved are returned for the
row's ``extra``, and the chosen run is checked for convergence: a run that is not solved and
whose best validation score in the last quarter of its budget beats the best before it by more
than ``IMPROVING`` is ``not_converged`` (it was still learning when the budget ran out).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tasks.base import Diverged
from tasks.instruments.context import CellContext

AUX_WEIGHT = 0.01  # Switch Transformer's load-balancing coefficient
IMPROVING = 0.01  # validation gain over the last quarter of the budget that means "still learning"
TIE = 0.02  # validation scores this close cannot rank candidates: training loss decides
SEARCHES = ("halving", "grid")
EXPLODED = 10.0  # a training loss above this multiple of the first step's has diverged

Data = tuple[np.ndarray, np.ndarray]
Score = Callable[[torch.nn.Module, Data], float]


def lr_at(step: int, *, steps: int, lr: float, warmup_frac: float) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    warm = max(1, int(warmup_frac * steps))
    if step < warm:
        return lr * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def rungs(n: int, steps: int, eta: int) -> list[int]:
    """Step at which each rung of successive halving over ``n`` candidates ends (the last is
    ``steps``): ``ceil(log_eta n) + 1`` rungs, each ``eta`` times longer than the one before."""
    count = 1 if n <= 1 else math.ceil(math.log(n) / math.log(eta) - 1e-9) + 1
    ends = [max(1, steps // eta ** (count - 1 - r)) for r in range(count)]
    return sorted(set(ends))


@dataclass
class Fit:
    """What one training run did: final train loss, steps run, best validation score, and the
    validation curve ``[(step, score), ...]``."""

    train_loss: float
    steps_run: int
    val_accuracy: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    solved: bool = False
    curve: list[tuple[int, float]] = field(default_factory=list)


class Run:
    """One model trained at one LR, resumable: ``advance(until)`` trains up to step ``until`` of
    a ``steps``-step schedule (or until solved / out of patience) and keeps the best
    validation weights."""

    def __init__(self, model: torch.nn.Module, data: Data, ctx: CellContext, *, lr: float,
                 steps: int, batch_size: int, weight_decay: float, warmup_frac: float,
                 val: Data | None, score: Score, eval_every: int, patience: int = 0,
                 solved_at: float | None = None) -> None:
        self.model, self.ctx, self.lr, self.steps = model, ctx, lr, steps
        self.batch_size, self.warmup_frac = batch_size, warmup_frac
        # decay on weight matrices only: each variant declares its no-decay parameters
        self.opt = torch.optim.AdamW(model.param_groups(weight_decay), lr=lr)
        self.rng = np.random.default_rng(ctx.seed + 17)  # same minibatches for every LR
        self.x_all, self.y_all = torch.from_numpy(data[0]), torch.from_numpy(data[1])
        self.val = val if val is not None and len(val[0]) else None
        self.score, self.eval_every, self.patience = score, eval_every, patience
        self.solved_at = solved_at
        self.step = 0
        self.losses: list[float] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.since_best = 0
        self.done = False  # solved, out of patience, or at the end of the budget
        self.stopped_early = self.solved = False
        self.diverged_at: int | None = None  # step whose loss was non-finite or exploded
        self.curve: list[tuple[int, float]] = []

    def _train_step(self) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, steps=self.steps, lr=self.lr,
                                warmup_frac=self.warmup_frac)
        idx = torch.from_numpy(self.rng.integers(0, len(self.x_all), self.batch_size))
        x = self.x_all[idx].to(self.ctx.torch_device)
        y = self.y_all[idx].to(self.ctx.torch_device)
        logits = self.model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
        value = loss.item()
        self.losses.append(value)
        if not math.isfinite(value) or value > EXPLODED * self.losses[0]:
            self.diverged_at, self.done = self.step, True  # nothing after this is a score
            return
        aux = getattr(self.model, "aux_loss", None)  # MoE load balancing (0 for dense models)
        if aux is not None:
            loss = loss + AUX_WEIGHT * aux
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1

    def _validate(self) -> None:
        self.model.eval()
        value = self.score(self.model, self.val)
        self.model.train()
        self.curve.append((self.step, value))
        if self.best is None or value > self.best[0]:
            self.best = (value, self.step, copy.deepcopy(self.model.state_dict()))
            self.since_best = 0
        else:
            self.since_best += 1
            if self.patience and self.since_best >= self.patience and self.step < self.steps:
                self.stopped_early = self.done = True
        if self.solved_at is not None and value >= self.solved_at:
            self.solved = self.done = True

    def advance(self, until: int) -> None:
        """Train up to step ``until`` (validating on the way and at ``until``)."""
        until = min(until, self.steps)
        self.model.train()
        while not self.done and self.step < until:
            self._train_step()
            if self.val is not None and (self.step % self.eval_every == 0 or self.step == until):
                self._validate()
        if self.step >= self.steps:
            self.done = True
        self.model.eval()

    @property
    def best_score(self) -> float:
        """Best validation score; a diverged run ranks below every other."""
        if self.best is None or self.diverged_at is not None:
            return -math.inf
        return self.best[0]

    def finish(self) -> Fit:
        """Restore the best validation weights; what the run did."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        fit = Fit(train_loss=float(np.mean(tail)) if tail else math.nan, steps_run=self.step,
                  stopped_early=self.stopped_early, solved=self.solved, curve=list(self.curve))
        if self.best is not None:
            self.model.load_state_dict(self.best[2])
            fit.val_accuracy, fit.best_step = self.best[0], self.best[1]
        self.model.eval()
        return fit


def ranked(runs: dict[float, Run], alive: list[float]) -> list[float]:
    """``alive`` LRs best first: by validation score, except that those within ``TIE`` of the
    best score are ordered by LR, smallest first (see the module doc)."""
    top = max(runs[lr].best_score for lr in alive)

    def key(lr: float) -> tuple[bool, float]:
        if runs[lr].best_score >= top - TIE:
            return (False, lr)
        return (True, -runs[lr].best_score)

    return sorted(alive, key=key)


def converged(fit: Fit, steps: int) -> tuple[bool, str]:
    """Whether a finished run had stopped learning, with the reason (see module doc)."""
    if fit.solved:
        return True, f"validation solved at step {fit.best_step}"
    if fit.stopped_early:
        return True, f"no validation gain for the patience window (stopped at {fit.steps_run})"
    if len(fit.curve) < 2:
        return True, "too few validation points to judge"
    cut = 0.75 * steps
    before = [v for s, v in fit.curve if s <= cut]
    after = [v for s, v in fit.curve if s > cut]
    if not before or not after:
        return True, "too few validation points to judge"
    gain = max(after) - max(before)
    if gain > IMPROVING:
        return False, (f"validation still improving at the end: best {max(after):.3f} in the "
                       f"last quarter vs {max(before):.3f} before")
    return True, f"validation gain over the last quarter {gain:+.3f} <= {IMPROVING}"


def search(build: Callable[[], torch.nn.Module], train_set: Data, val_set: Data,
           ctx: CellContext, *, grid: list[float], steps: int, batch_size: int,
           weight_decay: float, warmup_frac: float, score: Score, eval_every: int,
           patience: int = 0, solved_at: float | None = None, method: str = "halving",
           eta: int = 2) -> tuple[torch.nn.Module, float, Fit, dict[str, Any]]:
    """Train one candidate per LR of ``grid`` from the same seeded initialisation and keep the
    best on validation: successive halving (``method="halving"``) or every LR to the full
    budget (``"grid"``). Returns the chosen model, its LR, its :class:`Fit` and, per LR, its
    curve, steps, where it was cut and whether it solved."""
    def make(lr: float) -> Run:
        return Run(build(), train_set, ctx, lr=lr, steps=steps, batch_size=batch_size,
                   weight_decay=weight_decay, warmup_frac=warmup_frac, val=val_set,
                   score=score, eval_every=eval_every, patience=patience,
                   solved_at=solved_at)

    runs = {lr: make(lr) for lr in grid}
    ends = rungs(len(grid), steps, eta) if method == "halving" else [steps]
    alive = list(grid)
    cut_at: dict[float, int] = {}
    winner: float | None = None
    for i, end in enumerate(ends):
        for lr in alive:
            runs[lr].advance(end)
            if runs[lr].solved:
                winner = lr
                break
        if winner is not None:
            break
        if i < len(ends) - 1:  # keep the best 1/eta (see :func:`ranked`)
            keep = max(1, math.ceil(len(alive) / eta))
            order = ranked(runs, alive)
            for lr in order[keep:]:
                cut_at[lr] = runs[lr].step
            alive = [lr for lr in alive if lr in order[:keep]]
    if winner is None:  # the best validation score; the test split is never consulted
        winner = max(alive, key=lambda lr: (runs[lr].best_score, -alive.index(lr)))
    if runs[winner].diverged_at is not None:
        where = ", ".join(f"lr {lr:g} at step {r.diverged_at}" for lr, r in runs.items()
                          if r.diverged_at is not None)
        raise Diverged(f"training diverged (loss non-finite or above {EXPLODED:g}x its first "
                       f"value) with no finished candidate left: {where}")
    fits = {lr: run.finish() for lr, run in runs.items()}
    record = {f"{lr:g}": {"val_accuracy": f.val_accuracy, "train_loss": f.train_loss,
                          "steps_run": f.steps_run, "cut_at": cut_at.get(lr),
                          "solved": f.solved, "diverged_at": runs[lr].diverged_at,
                          "curve": [list(p) for p in f.curve]}
              for lr, f in fits.items()}
    return runs[winner].model, winner, fits[winner], record
