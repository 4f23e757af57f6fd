"""Bounded-depth Dyck-(k, D): name the bracket that must close next, a stack-memory task.

Dyck-(k, D) is the language of well-nested strings over ``k`` bracket types whose nesting never
exceeds ``D`` (Hewitt et al. 2020, "RNNs can generate bounded hierarchical languages with
optimal memory"; Yao et al. 2021, "Self-attention networks can process bounded hierarchical
languages"). A sequence is ``length`` tokens of a prefix of such a word: a random walk that opens
a bracket of a uniform type with probability ``p_open`` and otherwise closes the innermost open
one, except that it must open on an empty stack and close at depth ``max_depth``. Every prefix is
therefore valid and can be completed to a well-formed word.

At every position the model must predict the closing bracket that the innermost open bracket
requires, or EMPTY when the stack is empty (the usual "next required closing bracket" task);
the answer is determined at every position, so every position is scored.
After an open bracket the answer is just its partner; after a close it is the bracket opened
below, which must be remembered, possibly from far back. The classes are token ids (the close
brackets and EMPTY), so the argmax over the vocabulary is the prediction.

Chance is ``1 / (k + 1)`` (0.25 with the defaults). The floor is the best predictor that sees
only the current token: a table from input token to its most frequent target, fitted on
``FLOOR_SIZE`` sequences of a stream of its own (``FLOOR_SEED``, never a split of any run), then
scored on the test set. It is right after every open and guesses after a close; ~0.65 with the
defaults. All rows have the same length, so there is no padding. Scored by argmax accuracy over
every position of held-out sequences.

Length: ``length`` (T) is independent of the content (types, depth, ``p_open``); the minimum is
2. The default budget is solved by the LSTM, mamba and the transformer (see ``Config``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

# tokens: opens 0..k-1, the matching closes k..2k-1, then EMPTY (a target class, never an input)

VERSION = 1
MIN_LENGTH = 2
# the floor's own sample: beyond the split streams 3s .. 3s + 2 of every seed s below 2**40
FLOOR_SEED = 2**42
FLOOR_SIZE = 4_000


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    n_types: int = 3  # k, bracket types
    max_depth: int = 6  # D, the nesting the walk never exceeds
    length: int = 48  # tokens per sequence; T = length
    p_open: float = 0.5  # chance to open where both moves are allowed
    # d_model 64, 2 layers, 2-core CPU: lstm 0.997 in ~19 s (alone), mamba 0.989 in ~100 s and
    # transformer 0.970 in ~73 s (both sharing the CPU); chance 0.25, current token alone 0.65
    steps: int = 400

    def validate(self) -> None:
        if self.n_types < 1:
            raise ValueError("n_types must be >= 1")
        if self.max_depth < 1:
            raise ValueError("max_depth must be >= 1")
        if self.length < MIN_LENGTH:
            raise ValueError(f"length must be >= {MIN_LENGTH}, got {self.length}")
        if not 0 < self.p_open < 1:
            raise ValueError("p_open must be in (0, 1) so both moves occur")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test rows are alike)."""
        return self.seq_len

    @property
    def empty(self) -> int:
        """Token id of the EMPTY class: the stack is empty, nothing needs closing."""
        return 2 * self.n_types

    @property
    def vocab_size(self) -> int:
        return 2 * self.n_types + 1


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T): the close the innermost open bracket needs."""
    rng = np.random.default_rng(seed)
    k = cfg.n_types
    rows = np.arange(n)
    stack = np.zeros((n, cfg.max_depth), dtype=np.int64)  # open types, bottom first
    depth = np.zeros(n, dtype=np.int64)
    seq = np.empty((n, cfg.length), dtype=np.int64)
    targets = np.empty_like(seq)
    for t in range(cfg.length):
        u = rng.random(n)
        kind = rng.integers(0, k, n)
        opens = (depth == 0) | ((depth < cfg.max_depth) & (u < cfg.p_open))
        top = stack[rows, np.maximum(depth - 1, 0)]
        seq[:, t] = np.where(opens, kind, k + top)
        stack[rows[opens], depth[opens]] = kind[opens]
        depth += np.where(opens, 1, -1)
        top = stack[rows, np.maximum(depth - 1, 0)]
        targets[:, t] = np.where(depth > 0, k + top, cfg.empty)
    return seq, targets


def chance(cfg: Config) -> float:
    """Accuracy of a uniform guess over the answers: the k closes and EMPTY."""
    return 1.0 / (cfg.n_types + 1)


def current_token_table(cfg: Config) -> np.ndarray:
    """(V,) the most frequent target after each input token (smallest id on ties), counted
    over ``FLOOR_SIZE`` sequences from ``FLOOR_SEED``, never the test set."""
    seq, targets = generate(cfg, FLOOR_SIZE, FLOOR_SEED)
    counts = np.zeros((cfg.vocab_size, cfg.vocab_size), dtype=np.int64)
    np.add.at(counts, (seq.ravel(), targets.ravel()), 1)
    return counts.argmax(1)


def floor(cfg: Config, test_set: _seqtask.Data) -> tuple[float, str]:
    """Accuracy over ``test_set``'s scored positions of the current-token table."""
    seq, targets = test_set
    guess = current_token_table(cfg)[seq]
    scored = targets != -100
    return (float(np.mean(guess[scored] == targets[scored])),
            "the current token alone (its most frequent answer)")


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len, what="positions",
        hint="raise length or n_types so the task has enough distinct sequences",
        chance=chance(cfg), floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "dyck", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
