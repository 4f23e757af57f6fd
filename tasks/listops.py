"""ListOps (Nangia & Bowman 2018; Long Range Arena, Tay et al. 2021): evaluate a nested expression.

A sequence is one prefix expression over the digits 0-9 with the operators MIN, MAX, MED and
SM, e.g. ``[MAX 4 [MIN 7 2 ] 9 ]``, followed by a query token; at the query the model must
predict the expression's value, a digit. MED is the lower median (``sorted(args)[(n - 1) // 2]``,
so an even count takes the smaller of the two middle values) and SM the sum modulo 10.

Expressions are generated as in LRA's ListOps script: the root is an operator with 2 to
``max_args`` arguments (uniform), and each argument is itself an operator, with probability
``p_branch``, while the nesting is shallower than ``max_depth``, or else a uniform digit. Instead
of LRA's filtering by length, the generator is bounded: an argument only becomes an operator when
the tokens still free leave room for it (4 tokens at least, after one token is kept for each later
argument), and the argument count is capped by the free tokens, so no expression exceeds
``max_len``. With the defaults the bound is rarely reached (mean length ~10 tokens, 0.4% of
expressions at 32); rows vary in length and are right-padded with PAD, and only the query
position is scored. Short flat expressions recur, so the disjoint test split leans towards the
longer, deeper ones.

Chance is 0.10. The labels are close to uniform overall, though each operator skews its own
(MIN towards 0, MAX towards 9, SM uniform): the label histogram of 20,000 seed-0 rows at the
defaults, digits 0-9 in percent, is

    12.0  11.3  10.8  10.2  9.6  9.3  9.2  8.8  9.3  9.4

Scored by argmax accuracy over the query positions of held-out sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, Task

# digits are tokens 0-9
MIN, MAX, MED, SM = 10, 11, 12, 13  # each one opens an operator: ``[MIN`` ... ``]``
CLOSE = 14
QUERY = 15
PAD = 16
OPERATORS = (MIN, MAX, MED, SM)
MIN_EXPR = 4  # the shortest expression: ``[OP d d ]``

VERSION = 1


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    max_depth: int = 3  # operator nesting; 1 is a flat list such as ``[SM 3 8 1 ]``
    max_args: int = 4  # arguments per operator, drawn uniformly from 2..max_args
    max_len: int = 32  # tokens of an expression at most; T = max_len + 1 (the query)
    p_branch: float = 0.25  # chance an argument is a sub-expression (LRA's script: 0.25)
    # d_model 64, 2 layers, 2-core CPU shared with other jobs: lstm 0.60 in ~63 s, mamba 0.60
    # in ~112 s, transformer 0.52 in ~48 s (chance 0.10); lstm with max_depth 2, max_args 3
    # reaches 0.68, so no small model here nears 0.9 within a CPU-minute budget
    steps: int = 800

    def validate(self) -> None:
        if self.max_depth < 1:
            raise ValueError("max_depth must be >= 1")
        if self.max_args < 2:
            raise ValueError("max_args must be >= 2 (every operator takes at least two)")
        if self.max_len < MIN_EXPR:
            raise ValueError(f"max_len must be >= {MIN_EXPR}, the shortest expression")
        if not 0 <= self.p_branch <= 1:
            raise ValueError("p_branch must be in [0, 1]")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return self.max_len + 1

    @property
    def vocab_size(self) -> int:
        return PAD + 1


def apply(op: int, args: list[int]) -> int:
    """The value of operator token ``op`` on digit arguments."""
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        return sorted(args)[(len(args) - 1) // 2]  # lower median
    if op == SM:
        return sum(args) % 10
    raise ValueError(f"not an operator token: {op}")


def _expression(cfg: Config, rng: np.random.Generator, depth: int, budget: int,
                out: list[int]) -> int:
    """Append one operator expression of at most ``budget`` (>= 4) tokens to ``out``; its value.

    Uniform draws come from ``rng.random()`` alone (scalar draws of it are the cheapest).
    """
    op = OPERATORS[int(rng.random() * 4)]
    n_args = min(2 + int(rng.random() * (cfg.max_args - 1)), budget - 2)
    out.append(op)
    free = budget - 2  # tokens left for the arguments, the close excluded
    args = []
    for i in range(n_args):
        room = free - (n_args - 1 - i)  # one token kept for each later argument
        if depth < cfg.max_depth and room >= MIN_EXPR and rng.random() < cfg.p_branch:
            start = len(out)
            args.append(_expression(cfg, rng, depth + 1, room, out))
            free -= len(out) - start
        else:
            digit = int(rng.random() * 10)
            out.append(digit)
            args.append(digit)
            free -= 1
    out.append(CLOSE)
    return apply(op, args)


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T), right-padded, and targets (n, T): the value at the query."""
    rng = np.random.default_rng(seed)
    seq = np.full((n, cfg.seq_len), PAD, dtype=np.int64)
    targets = np.full_like(seq, -100)
    for row in range(n):
        out: list[int] = []
        value = _expression(cfg, rng, 1, cfg.max_len, out)
        seq[row, : len(out)] = out
        seq[row, len(out)] = QUERY
        targets[row, len(out)] = value
    return seq, targets


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    return _seqtask.run_task(
        cfg, ctx, generate, version=VERSION,
        name="listops", vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        what="query positions",
        hint="raise max_len, max_args or max_depth so the task has enough distinct sequences",
        pad=PAD)


TASK = tasks.register(Task(
    name="listops", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=_seqtask.METRICS,
))
