"""In-context linear regression over Z_p: infer a hidden line from examples, predict new points.

The modular (discrete) analogue of Garg et al. 2022, "What Can Transformers Learn In-Context? A
Case Study of Simple Function Classes". There each prompt draws its own weight vector ``w`` and
shows pairs ``(x_i, w . x_i)`` of real vectors; the model must predict each ``y_i`` from
``x_i`` and the earlier pairs, i.e. learn a learning algorithm rather than one function.
archbench models read token ids and are scored by argmax accuracy, so here the function class is
the lines over the field Z_p (``p`` prime): each sequence draws ``w`` in 1..p-1 and ``b`` in
0..p-1 and shows ``x1 y1 x2 y2 ...`` with ``y_i = (w * x_i + b) mod p``. Exactness replaces
squared error: over a field, two examples with distinct ``x`` determine ``w`` and ``b``
(``w = (y2 - y1) / (x2 - x1)``, ``b = y1 - w x1``), so from the third example on a perfect
in-context learner is always right, while a model that ignores the context is at chance ``1/p``.

Tokens: ``x`` is token ``x`` (0..p-1) and ``y`` is token ``p + y`` (p..2p-1), so the vocabulary
is ``2p`` and inputs and outputs never share an id. The first two ``x`` of a sequence are drawn
distinct, so that they always determine the line; the rest are uniform over Z_p (a later ``x``
may repeat an earlier one, when copying its ``y`` is also correct). The target at each ``x``
position is the ``y`` token that follows; the first ``skip`` examples, which the context cannot
yet determine, are not scored. Scored by argmax accuracy over the scored ``x`` positions of
held-out sequences (chance ``1/p``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, Task

VERSION = 1


def is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    p: int = 7  # prime modulus: x and y in Z_p, p * (p - 1) lines; chance 1/p
    n_examples: int = 16  # (x, y) pairs per sequence; T = 2 * n_examples
    skip: int = 2  # leading examples not scored (2: the fewest that determine the line)
    # d 64, 2 layers, 2-core CPU, p 7, T 32: lstm 0.97 (83 s beside another run, ~55 s alone;
    # 0.90 at 1000 steps in 37 s); transformer 0.32 at 1000 steps (lr 3e-3 or 1e-3); mamba
    # 0.26 s a step
    steps: int = 1500

    def validate(self) -> None:
        if not is_prime(self.p):
            raise ValueError(f"p must be a prime >= 2, got {self.p}")
        if self.n_examples < 2:
            raise ValueError("n_examples must be >= 2 (two examples determine a line)")
        if not 0 <= self.skip < self.n_examples:
            raise ValueError("skip must be in [0, n_examples) so that some example is scored")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_examples

    @property
    def vocab_size(self) -> int:
        return 2 * self.p


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) ``x1 y1 x2 y2 ...`` and targets (n, T): ``y_i`` at each scored
    ``x_i`` position, -100 elsewhere."""
    rng = np.random.default_rng(seed)
    p = cfg.p
    w = rng.integers(1, p, (n, 1))
    b = rng.integers(0, p, (n, 1))
    x = rng.integers(0, p, (n, cfg.n_examples))
    x[:, 1] = (x[:, 0] + rng.integers(1, p, n)) % p  # x2 != x1: the line is determined
    y = (w * x + b) % p  # (n, n_examples)
    seq = np.empty((n, cfg.seq_len), dtype=np.int64)
    seq[:, 0::2] = x
    seq[:, 1::2] = p + y
    targets = np.full_like(seq, -100)
    targets[:, 2 * cfg.skip :: 2] = p + y[:, cfg.skip :]  # logits at x_i name y_i
    return seq, targets


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    return _seqtask.run_task(
        cfg, ctx, generate, version=VERSION,
        name="icl_regression", vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        what=f"query positions (examples {cfg.skip + 1}..{cfg.n_examples}, chance 1/{cfg.p})",
        hint="raise n_examples or p so the task has enough distinct sequences")


TASK = tasks.register(Task(
    name="icl_regression", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=_seqtask.METRICS,
))
