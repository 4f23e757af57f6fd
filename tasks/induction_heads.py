"""Induction heads (Olsson et al. 2022; H3/Hyena benchmark): recall what followed the trigger.

A sequence of ``seq_len`` random tokens from ``n_symbols`` symbols contains a special trigger
token once, at a random position, followed by a value token. The last position is the trigger
again, and the model must predict the value that followed its first occurrence (the pattern
``... t v ... t -> v`` that an induction head implements). The trigger occurs nowhere else.
Scored by argmax accuracy at the final position of held-out sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, Task

VERSION = 2  # 2: train/validation/test streams of the shared protocol


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    seq_len: int = 32  # including the trigger at the end
    n_symbols: int = 16  # ordinary symbols 0 .. n_symbols - 1; the trigger is n_symbols
    steps: int = 600  # mamba (d 64, 2 layers, 2-core CPU): 1.0 in ~70 s; attention stalls

    def validate(self) -> None:
        if self.seq_len < 3:
            raise ValueError("seq_len must be >= 3 (trigger, value, trigger)")
        if self.n_symbols < 2:
            raise ValueError("n_symbols must be >= 2")
        _seqtask.check_budget(self)

    @property
    def trigger(self) -> int:
        return self.n_symbols

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 1


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T) with -100 where nothing is scored."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, cfg.n_symbols, (n, cfg.seq_len)).astype(np.int64)
    where = rng.integers(0, cfg.seq_len - 2, n)  # first trigger; its value is at where + 1
    seq[np.arange(n), where] = cfg.trigger
    seq[:, -1] = cfg.trigger
    targets = np.full_like(seq, -100)
    targets[:, -1] = seq[np.arange(n), where + 1]
    return seq, targets


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    return _seqtask.run_task(
        cfg, ctx, generate, version=VERSION,
        name="induction_heads", vocab_size=cfg.vocab_size,
        seq_len=cfg.seq_len, what="final (trigger) positions",
        hint="raise seq_len or n_symbols so the task has enough distinct sequences")


TASK = tasks.register(Task(
    name="induction_heads", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=_seqtask.METRICS,
))
