"""Permutation composition (word problems on S3 and S5): track a group element through a sequence.

Each token is an element of the symmetric group ``group`` (S3: 6 elements, S5: 120), drawn
uniformly; at every position the model must predict the product of all elements so far, the
state of a finite automaton whose transitions are the group (Liu et al. 2023, "Transformers
Learn Shortcuts to Automata"; Merrill, Petty & Sabharwal 2024, "The Illusion of State in
State-Space Models"). S5 is not solvable, so its word problem is NC1-complete: unless
TC0 = NC1, neither fixed-depth transformers nor the common linear SSMs (S4, Mamba) solve it at
every length, while a nonlinear recurrent model can, one step per token. S3 is solvable (Z3
semidirect Z2), so constant-depth shortcuts exist (Krohn-Rhodes, Liu et al.).

Tokens: element ``i`` is ``ELEMENTS[group][i]``, the ``i``-th tuple of
``itertools.permutations(range(k))`` (lexicographic order, so index 0 is the identity); a tuple
``p`` maps ``j`` to ``p[j]``. Composition convention: the sequence ``a1 a2 ... at`` acts left to
right, ``a1`` first, so the state after position ``t`` is ``s_t = a_t o s_{t-1}`` with
``(a o b)[j] = a[b[j]]`` and ``s_1 = a1``. The target at position ``t`` is the index of ``s_t``.
Every prefix product is uniform over the group, so chance is ``1 / |G|`` (1/6 for S3, 1/120
for S5). The first position is a copy of the input, which gives the floor: copy the token at
the first position and guess the identity everywhere else, ``(1 + (T - 1) / |G|) / T`` in
expectation (0.219 for S3 at T = 16). Scored by argmax accuracy over all positions of held-out
sequences.

Length: ``length`` (T) is independent of the content (group, uniform elements); the minimum is 1.

Budgets: on S5 at T = 16 every model first learns position 1 and stalls; an LSTM broke out only
after ~10,500 steps (docs/METHOD.md). The default is therefore S3, which the LSTM solves in the
default budget (see ``Config``); S5 is the knob for a full suite, with ``steps`` raised to match.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

GROUPS = {"S3": 3, "S5": 5}  # group name -> k of S_k
ELEMENTS = {g: tuple(itertools.permutations(range(k))) for g, k in GROUPS.items()}

VERSION = 1
MIN_LENGTH = 1
IDENTITY = 0  # index of the identity in ELEMENTS[group] (lexicographic order)


def _mul_table(group: str) -> np.ndarray:
    """(|G|, |G|) table: ``table[a, b]`` is the index of ``a o b``, i.e. ``b`` then ``a``."""
    elems = ELEMENTS[group]
    index = {p: i for i, p in enumerate(elems)}
    return np.array([[index[tuple(a[j] for j in b)] for b in elems] for a in elems],
                    dtype=np.int64)


MUL = {g: _mul_table(g) for g in GROUPS}


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    group: str = "S3"  # "S3" (solvable, 6 elements) or "S5" (not solvable, 120 elements)
    length: int = 16  # T: group elements per sequence, every position scored
    # d 64, 2 layers, S3 at T = 16: lstm with the default LR search 0.995, 1.000, 0.999 on
    # seeds 0, 1, 2 (solved on validation after 200-500 steps, 12-16 s on one thread);
    # transformer 0.32 in the same budget; mamba 0.34 after 100 steps (0.12 s a step); S5
    # needs ~12,000+ (docs/METHOD.md)
    steps: int = 1000

    def validate(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}, got {self.group!r}")
        if self.length < MIN_LENGTH:
            raise ValueError(f"length must be >= {MIN_LENGTH}, got {self.length}")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test rows are alike)."""
        return self.seq_len

    @property
    def vocab_size(self) -> int:
        return len(ELEMENTS[self.group])


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) of element indices and targets (n, T): the prefix products."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, cfg.vocab_size, (n, cfg.length)).astype(np.int64)
    table = MUL[cfg.group]
    targets = np.empty_like(seq)
    targets[:, 0] = seq[:, 0]
    for t in range(1, cfg.length):  # sequential in T, vectorised over the n sequences
        targets[:, t] = table[seq[:, t], targets[:, t - 1]]  # s_t = a_t o s_{t-1}
    return seq, targets


def chance(cfg: Config) -> float:
    """Accuracy of a uniform guess over the group's elements."""
    return 1.0 / cfg.vocab_size


def floor(cfg: Config, test_set: _seqtask.Data) -> tuple[float, str]:
    """Accuracy over ``test_set``'s scored positions of copying the input at the first
    position and answering the identity at every later one."""
    seq, targets = test_set
    guess = np.full_like(seq, IDENTITY)
    guess[:, 0] = seq[:, 0]
    scored = targets != -100
    return (float(np.mean(guess[scored] == targets[scored])),
            "copy the first element, the identity after it")


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len,
        what=f"prefix-product positions ({cfg.group}, chance 1/{cfg.vocab_size})",
        hint="raise length so the task has enough distinct sequences", chance=chance(cfg),
        floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "permutation", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
