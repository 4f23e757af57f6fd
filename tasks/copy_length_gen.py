"""Copying with length generalisation (Jelassi et al. 2024, "Repeat After Me: Transformers are
Better than State Space Models at Copying"): train on short strings, copy longer ones.

A sequence is a string ``s1 .. sn`` over ``n_symbols`` symbols, a separator, and the string again,
teacher-forced: ``s1 .. sn SEP s1 .. sn``. At the separator the model must predict ``s1``, at the
copied ``s_k`` the next symbol ``s_{k+1}``, and at the copied ``s_n`` an end token ``EOS`` (which
never appears as an input), so all ``n + 1`` positions from the separator on are scored. A model
trained on lengths ``min_len .. train_max_len`` is tested on longer strings,
``train_max_len + 1 .. test_max_len``: the headline ``accuracy`` measures length generalisation.
Beside it, ``accuracy_in_range`` scores held-out strings of the training lengths, which says
whether the model learned to copy at all. Jelassi et al. find transformers generalise to longer
strings (with suitable position encodings) and state-space models, whose fixed-size state must
hold the whole string, do not.

Rows are right-padded with ``PAD`` to the longest row of their split (``2 * max_len + 1``
tokens); pads are never scored. Train, validation and in-range test strings come from separate
seeded streams with repeats dropped, so they are disjoint; long test strings are disjoint from
all of them by length. The backbone has no learned position table (the transformer uses rotary
embeddings), so the longer test rows fit every model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, MetricSpec, Task

Data = _seqtask.Data

VERSION = 1

ACCURACY = MetricSpec("accuracy", "fraction", True,
                      "argmax accuracy at the copy positions (EOS included) of held-out strings "
                      "longer than any trained on: length generalisation")
ACCURACY_IN_RANGE = MetricSpec("accuracy_in_range", "fraction", True,
                               "argmax accuracy at the copy positions (EOS included) of held-out "
                               "strings of the training lengths")
METRICS = (ACCURACY, ACCURACY_IN_RANGE, _seqtask.TRAIN_LOSS)


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    n_symbols: int = 16  # alphabet size; SEP, EOS and PAD are tokens n_symbols .. n_symbols + 2
    min_len: int = 4  # shortest training string
    train_max_len: int = 16  # longest training string; training rows are 2 * 16 + 1 wide
    test_max_len: int = 24  # longest test string; test strings are 17 .. 24 long (T = 49)
    test_size: int = 1_000  # of each test set: in-range and longer strings
    # d 64, 2 layers, 2-core CPU: transformer in range 0.996, longer 0.36, 54 s; lstm in
    # range 0.91, longer 0.59; mamba 0.27 s a step (0.13 in range after 100 steps)
    steps: int = 1000

    def validate(self) -> None:
        if self.n_symbols < 2:
            raise ValueError("n_symbols must be >= 2")
        if not 1 <= self.min_len <= self.train_max_len:
            raise ValueError("min_len must be between 1 and train_max_len")
        if self.test_max_len <= self.train_max_len:
            raise ValueError("test_max_len must be > train_max_len (test strings are longer)")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        """Width of a training row (the longest training string, copied, plus SEP)."""
        return 2 * self.train_max_len + 1

    @property
    def test_seq_len(self) -> int:
        return 2 * self.test_max_len + 1

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 3

    @property
    def sep(self) -> int:
        return self.n_symbols

    @property
    def eos(self) -> int:
        return self.n_symbols + 1

    @property
    def pad(self) -> int:
        return self.n_symbols + 2


def draw(cfg: Config, rng: np.random.Generator, n: int, lo: int, hi: int) -> Data:
    """``n`` strings of lengths uniform in ``lo .. hi``: tokens (n, 2 hi + 1) right-padded with
    PAD, targets (n, 2 hi + 1): the next copied symbol from SEP on, EOS last, -100 elsewhere."""
    lengths = rng.integers(lo, hi + 1, (n, 1))  # (n, 1)
    sym = rng.integers(0, cfg.n_symbols, (n, hi)).astype(np.int64)  # s1 .. s_hi, cut at length
    col = np.arange(2 * hi + 1)[None, :]  # (1, W)
    in_copy = (col > lengths) & (col <= 2 * lengths)
    src = np.where(col < lengths, col, col - lengths - 1)  # index into sym for a symbol slot
    seq = np.take_along_axis(sym, np.clip(src, 0, hi - 1), axis=1)
    seq = np.where((col < lengths) | in_copy, seq, cfg.pad)
    seq = np.where(col == lengths, cfg.sep, seq)
    nxt = np.take_along_axis(sym, np.clip(col - lengths, 0, hi - 1), axis=1)
    targets = np.where((col >= lengths) & (col < 2 * lengths), nxt, -100)
    targets = np.where(col == 2 * lengths, cfg.eos, targets)
    return seq.astype(np.int64), targets.astype(np.int64)


def generate(cfg: Config, n: int, seed: int) -> Data:
    """``n`` strings of the training lengths, (n, seq_len) tokens and targets."""
    return draw(cfg, np.random.default_rng(seed), n, cfg.min_len, cfg.train_max_len)


def splits(cfg: Config, seed: int) -> tuple[Data, Data, Data, Data]:
    """(train, val, test_in_range, test_long), disjoint.

    Train, validation and in-range test strings have the training lengths and come from the
    train, validation and test streams of the shared protocol, with repeats dropped
    (:func:`_seqtask.disjoint_splits`). The long test strings come from a child of the test
    stream and are longer than every training string, so disjoint from all three.
    """
    train, val, test_in = _seqtask.disjoint_splits(
        generate, cfg, seed, name="copy_length_gen", with_val=True,
        hint="raise n_symbols or min_len so the task has enough distinct strings")
    rng = np.random.default_rng((_seqtask.stream(seed, 1), 1))
    test_long = draw(cfg, rng, cfg.test_size, cfg.train_max_len + 1, cfg.test_max_len)
    return train, val, test_in, test_long


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    (train_set, val_set, test_in, test_long), data_hash = _seqtask.cached(
        "copy_length_gen", VERSION, cfg, ctx.seed, lambda: splits(cfg, ctx.seed))
    model, lr, result, grid = _seqtask.fit(
        lambda: ctx.build_model(vocab_size=cfg.vocab_size), train_set, val_set, ctx, cfg,
        pad=cfg.pad)
    acc_long = _seqtask.evaluate(model, test_long, ctx, pad=cfg.pad)
    acc_in = _seqtask.evaluate(model, test_in, ctx, pad=cfg.pad)
    more: dict[str, Any] = {
        **_seqtask.fit_facts(cfg, lr, result, grid, val_set),
        "data_hash": data_hash,
        "test_seq_len": cfg.test_seq_len, "in_range_sequences": len(test_in[0]),
    }
    if cfg.save_checkpoint:
        more["checkpoint"] = _seqtask.save_checkpoint(
            model, ctx, "copy_length_gen", {"lr": lr, "accuracy": acc_long})
    what = (f"copy positions (incl. EOS; string lengths {cfg.train_max_len + 1}.."
            f"{cfg.test_max_len}, longer than any trained on)")
    rows = _seqtask.accuracy_metrics(
        cfg=cfg, model=model, test_set=test_long, accuracy=acc_long,
        train_loss=result.train_loss, seq_len=cfg.seq_len, what=what, **more)
    n_in = int((test_in[1] != -100).sum())
    in_range = Metric(
        name=ACCURACY_IN_RANGE.name, unit=ACCURACY_IN_RANGE.unit, value=acc_in,
        higher_is_better=ACCURACY_IN_RANGE.higher_is_better,
        method=(f"argmax at {n_in} copy positions (incl. EOS) of held-out strings of the "
                f"training lengths {cfg.min_len}..{cfg.train_max_len}"),
        n_samples=n_in, extra=rows[0].extra)
    return [rows[0], in_range, *rows[1:]]


TASK = tasks.register(Task(
    name="copy_length_gen", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=METRICS,
))
