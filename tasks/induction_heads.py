"""Induction heads (Olsson et al. 2022; H3/Hyena benchmark): recall what followed the trigger.

A sequence of ``seq_len`` random tokens from ``n_symbols`` symbols contains a special trigger
token once, at a random position, followed by a value token. The last position is the trigger
again, and the model must predict the value that followed its first occurrence (the pattern
``... t v ... t -> v`` that an induction head implements). The trigger occurs nowhere else.
``seq_len`` sets the length independently of the content (one trigger-value pair).
Scored by argmax accuracy at the final position of held-out sequences.

Chance is ``1 / n_symbols``. The floor, the best answer that ignores the trigger, is the most
frequent symbol of the context (ties to the smallest id): the value is one of its symbols, so
this beats chance, most of all in short sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

VERSION = 3  # 3: chance and trivial-strategy floor on the accuracy row

FLOOR = "the most frequent symbol of the context (ties: smallest id)"


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    seq_len: int = 32  # including the trigger at the end
    n_symbols: int = 16  # ordinary symbols 0 .. n_symbols - 1; the trigger is n_symbols
    steps: int = 600  # mamba (d 64, 2 layers, 2-core CPU): 1.0 in ~70 s; attention stalls

    def validate(self) -> None:
        if self.seq_len < 3:
            raise ValueError(f"seq_len must be >= 3 (trigger, value, trigger), "
                             f"got {self.seq_len}")
        if self.n_symbols < 2:
            raise ValueError(f"n_symbols must be >= 2, got {self.n_symbols}")
        _seqtask.check_budget(self)

    @property
    def trigger(self) -> int:
        return self.n_symbols

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test alike)."""
        return self.seq_len

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


def chance(cfg: Config) -> float:
    """A uniform guess over the ordinary symbols."""
    return 1 / cfg.n_symbols


def floor(cfg: Config, data: _seqtask.Data) -> tuple[float, str]:
    """Accuracy of :data:`FLOOR` over the scored positions of ``data``."""
    tokens, targets = data
    onehot = tokens[:, :, None] == np.arange(cfg.n_symbols)  # (n, T, n_symbols)
    seen = np.cumsum(onehot, axis=1) - onehot  # symbols strictly before each position
    guess = np.argmax(seen, axis=2)  # (n, T); argmax takes the smallest id on ties
    scored = targets != -100
    return float((guess[scored] == targets[scored]).mean()), FLOOR


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len, what="final (trigger) positions",
        hint="raise seq_len or n_symbols so the task has enough distinct sequences",
        chance=chance(cfg), floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "induction_heads", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
