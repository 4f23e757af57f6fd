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
hold the whole string, do not. A model that has not learned to copy in range
(``accuracy_in_range`` below ``LEARNED_IN_RANGE`` = 0.9) has nothing to generalise: the headline
row then says "not learned in range" (``learned_in_range`` false in its extra, beside
``accuracy_in_range``), not "does not generalise".

Chance is ``1 / (n_symbols + 1)`` (a symbol or EOS). The floor, on each test set, is a strategy
with no memory of the string: EOS where the copy ends (the separator's position gives the
length) and a fixed symbol elsewhere, ``(1 + n / n_symbols) / (n + 1)`` in expectation for a
string of length ``n``; ~0.14 in range and ~0.11 on the longer strings with the defaults.

Length: ``min_len .. train_max_len`` (training) and ``test_max_len`` (test) are the length knobs,
independent of the alphabet; ``min_len`` >= 1 and ``test_max_len`` >= ``train_max_len + 1``.
A model reads rows of up to ``2 * test_max_len + 1`` tokens (``model_seq_len``).

Rows are right-padded with ``PAD`` to the longest row of their split (``2 * max_len + 1``
tokens); pads are never scored. Train, validation and in-range test strings come from separate
seeded streams with repeats dropped, so they are disjoint; long test strings are disjoint from
all of them by length. The backbone has no learned position table (the transformer uses rotary
embeddings), so the longer test rows fit every model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

import tasks
from tasks import _seqtask
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext

Data = _seqtask.Data

NAME, VERSION = "copy_length_gen", 1
MIN_LEN = 1
LEARNED_IN_RANGE = 0.9  # in-range accuracy from which the model counts as having learned to copy
FLOOR_SYMBOL = 0  # the floor's answer at every symbol position (all symbols are equally likely)

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
        if self.min_len < MIN_LEN:
            raise ValueError(f"min_len must be >= {MIN_LEN}, got {self.min_len}")
        if self.min_len > self.train_max_len:
            raise ValueError(f"train_max_len must be >= min_len = {self.min_len}, "
                             f"got {self.train_max_len}")
        if self.test_max_len <= self.train_max_len:
            raise ValueError(f"test_max_len must be >= {self.train_max_len + 1} "
                             f"(train_max_len + 1: test strings are longer), "
                             f"got {self.test_max_len}")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        """Width of a training row (the longest training string, copied, plus SEP)."""
        return 2 * self.train_max_len + 1

    @property
    def test_seq_len(self) -> int:
        """Width of a longer-string test row."""
        return 2 * self.test_max_len + 1

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads: a longer-string test row."""
        return max(self.seq_len, self.test_seq_len)

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
        generate, cfg, seed, name=NAME, with_val=True,
        hint="raise n_symbols or min_len so the task has enough distinct strings")
    rng = np.random.default_rng((_seqtask.stream(seed, 1), 1))
    test_long = draw(cfg, rng, cfg.test_size, cfg.train_max_len + 1, cfg.test_max_len)
    return train, val, test_in, test_long


def chance(cfg: Config) -> float:
    """Accuracy of a uniform guess over the answers: the symbols and EOS."""
    return 1.0 / (cfg.n_symbols + 1)


def floor(cfg: Config, data: Data) -> tuple[float, str]:
    """Accuracy over ``data``'s scored positions of a strategy without memory of the string:
    EOS where the copy ends (at twice the separator's position), ``FLOOR_SYMBOL`` elsewhere."""
    seq, targets = data
    length = np.argmax(seq == cfg.sep, axis=1)[:, None]  # (n, 1): the separator's position
    col = np.arange(seq.shape[1])[None, :]  # (1, W)
    guess = np.where(col == 2 * length, cfg.eos, FLOOR_SYMBOL)  # (n, W)
    scored = targets != -100
    return (float(np.mean(guess[scored] == targets[scored])),
            f"no memory of the string: EOS where the copy ends, symbol {FLOOR_SYMBOL} elsewhere")


def _headline_method(method: str, acc_in: float) -> str:
    if acc_in >= LEARNED_IN_RANGE:
        return f"{method}; learned in range ({acc_in:.3f} >= {LEARNED_IN_RANGE})"
    return (f"{method}; not learned in range (in-range accuracy {acc_in:.3f} < "
            f"{LEARNED_IN_RANGE}), so this is no test of length generalisation")


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    (train_set, val_set, test_in, test_long), data_hash = _seqtask.cached(
        NAME, VERSION, cfg, ctx.seed, lambda: splits(cfg, ctx.seed))
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
            model, ctx, NAME, {"lr": lr, "accuracy": acc_long})
    learned = acc_in >= LEARNED_IN_RANGE
    what = (f"copy positions (incl. EOS; string lengths {cfg.train_max_len + 1}.."
            f"{cfg.test_max_len}, longer than any trained on)")
    rows = _seqtask.accuracy_metrics(
        cfg=cfg, model=model, test_set=test_long, accuracy=acc_long,
        train_loss=result.train_loss, seq_len=cfg.seq_len, what=what, chance=chance(cfg),
        floor=floor(cfg, test_long), accuracy_in_range=acc_in, learned_in_range=learned,
        **more)
    in_row = _seqtask.accuracy_metrics(
        cfg=cfg, model=model, test_set=test_in, accuracy=acc_in,
        train_loss=result.train_loss, seq_len=cfg.seq_len, chance=chance(cfg),
        floor=floor(cfg, test_in), learned_in_range=learned, **more)[0]
    in_range = replace(
        in_row, name=ACCURACY_IN_RANGE.name, unit=ACCURACY_IN_RANGE.unit,
        higher_is_better=ACCURACY_IN_RANGE.higher_is_better,
        method=(f"argmax at {in_row.n_samples} copy positions (incl. EOS) of held-out strings "
                f"of the training lengths {cfg.min_len}..{cfg.train_max_len}"))
    headline = replace(rows[0], method=_headline_method(rows[0].method, acc_in))
    return [headline, in_range, *rows[1:]]


TASK = tasks.register(Task(
    name=NAME, kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=METRICS,
))
