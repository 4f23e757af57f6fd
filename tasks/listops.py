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

The floor is the root operator alone: a table from the root operator (the first token) to its
most frequent value, fitted on ``FLOOR_SIZE`` expressions of a stream of its own
(``FLOOR_SEED``, never a split of any run), then scored on the test set; ~0.2 with the defaults.
Scored by argmax accuracy over the query positions of held-out sequences.

Length: ``max_len`` bounds the expression (T = max_len + 1) independently of the nesting and
argument knobs; the minimum is ``MIN_EXPR`` = 4, the shortest expression. No small model solves
the default budget (see ``Config``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

# digits are tokens 0-9
MIN, MAX, MED, SM = 10, 11, 12, 13  # each one opens an operator: ``[MIN`` ... ``]``
CLOSE = 14
QUERY = 15
PAD = 16
OPERATORS = (MIN, MAX, MED, SM)
MIN_EXPR = 4  # the shortest expression: ``[OP d d ]``

VERSION = 1
# the floor's own sample: beyond the split streams 3s .. 3s + 2 of every seed s below 2**40
FLOOR_SEED = 2**42
FLOOR_SIZE = 4_000


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
            raise ValueError(f"max_len must be >= {MIN_EXPR} (the shortest expression), "
                             f"got {self.max_len}")
        if not 0 <= self.p_branch <= 1:
            raise ValueError("p_branch must be in [0, 1]")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return self.max_len + 1

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test rows are alike)."""
        return self.seq_len

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


def chance(cfg: Config) -> float:
    """Accuracy of a uniform guess over the ten digits."""
    return 0.1


def root_operator_table(cfg: Config) -> np.ndarray:
    """(V,) the most frequent value of the expressions whose root is each operator token
    (smallest digit on ties), counted over ``FLOOR_SIZE`` expressions from ``FLOOR_SEED``, never
    the test set; rows of non-operator tokens are unused."""
    seq, targets = generate(cfg, FLOOR_SIZE, FLOOR_SEED)
    counts = np.zeros((cfg.vocab_size, 10), dtype=np.int64)
    np.add.at(counts, (seq[:, 0], targets.max(1)), 1)  # one scored position per row
    return counts.argmax(1)


def floor(cfg: Config, test_set: _seqtask.Data) -> tuple[float, str]:
    """Accuracy over ``test_set``'s query positions of the root-operator table."""
    seq, targets = test_set
    guess = root_operator_table(cfg)[seq[:, :1]]  # (n, 1): one answer per expression
    scored = targets != -100
    return (float(np.mean(np.broadcast_to(guess, seq.shape)[scored] == targets[scored])),
            "the root operator alone (its most frequent value)")


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len, what="query positions",
        hint="raise max_len, max_args or max_depth so the task has enough distinct sequences",
        pad=PAD, chance=chance(cfg), floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "listops", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
