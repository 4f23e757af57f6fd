"""Selective copying (Mamba, Gu & Dao 2023): copy the data tokens out of a noisy region, in order.

A region of ``region`` positions holds ``n_tokens`` data tokens (drawn from ``n_data`` symbols)
at random positions; every other position is a blank. A separator follows, and from there the
model must emit the data tokens in the order they appeared. Outputs are teacher-forced as in
language modelling: the input after the separator is the previous data token, and the target at
the separator and at each later position is the next data token to copy. Because the data
positions vary, a fixed-offset (time-invariant) mixer cannot solve it; it needs content-aware
selection. ``region`` sets the length independently of the content (``n_tokens`` data tokens).
Scored by argmax accuracy over the ``n_tokens`` output positions of held-out sequences.

Chance is ``1 / n_data``. The floor, the best answer that ignores the order, is the most
frequent data token of the region (ties to the smallest id) at every output position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

BLANK, SEP = 0, 1  # data symbols are 2 .. 2 + n_data - 1

VERSION = 3  # 3: chance and trivial-strategy floor on the accuracy row

FLOOR = "the most frequent data token of the region (ties: smallest id), at every output"


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    region: int = 32  # positions holding data and blanks; T = region + n_tokens
    n_tokens: int = 8  # data tokens to copy per sequence
    n_data: int = 8  # data alphabet size
    steps: int = 800  # transformer (d 64, 2 layers, 2-core CPU): ~0.98 in ~50 s

    def validate(self) -> None:
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens must be >= 1, got {self.n_tokens}")
        if self.region < self.n_tokens:
            raise ValueError(f"region must be >= {self.n_tokens} (n_tokens: a position per "
                             f"data token), got {self.region}")
        if self.n_data < 1:
            raise ValueError(f"n_data must be >= 1, got {self.n_data}")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return self.region + self.n_tokens

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test alike)."""
        return self.seq_len

    @property
    def vocab_size(self) -> int:
        return 2 + self.n_data


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T) with -100 where nothing is scored."""
    rng = np.random.default_rng(seed)
    # distinct positions in the region, kept in order
    pos = np.sort(np.argsort(rng.random((n, cfg.region)), axis=1)[:, : cfg.n_tokens], axis=1)
    data = rng.integers(0, cfg.n_data, (n, cfg.n_tokens)) + 2
    seq = np.full((n, cfg.seq_len), BLANK, dtype=np.int64)
    np.put_along_axis(seq, pos, data, axis=1)
    seq[:, cfg.region] = SEP
    seq[:, cfg.region + 1 :] = data[:, :-1]  # teacher-forced previous output
    targets = np.full_like(seq, -100)
    targets[:, cfg.region :] = data  # at the separator and after: the next token to copy
    return seq, targets


def chance(cfg: Config) -> float:
    """A uniform guess over the data alphabet."""
    return 1 / cfg.n_data


def floor(cfg: Config, data: _seqtask.Data) -> tuple[float, str]:
    """Accuracy of :data:`FLOOR` over the scored positions of ``data``."""
    tokens, targets = data
    symbols = np.arange(2, 2 + cfg.n_data)
    counts = (tokens[:, : cfg.region, None] == symbols).sum(1)  # (n, n_data)
    guess = symbols[np.argmax(counts, axis=1)][:, None]  # argmax: smallest id on ties
    scored = targets != -100
    return float((np.broadcast_to(guess, targets.shape)[scored] == targets[scored]).mean()), FLOOR


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len, what="copy positions",
        hint="raise region, n_tokens or n_data so the task has enough distinct sequences",
        chance=chance(cfg), floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "selective_copy", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
