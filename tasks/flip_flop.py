"""Flip-flop language modelling (Liu et al. 2023, "Exposing Attention Glitches"): read a register.

A sequence is ``n_instr`` instruction-bit pairs: ``w b`` writes bit ``b`` to a one-bit register,
``i b`` is ignored, and ``r b`` reads it, where ``b`` is always the last written bit. The first
instruction is a write and the last a read; the rest are write, ignore or read with
probabilities ``(1 - p_ignore) / 2``, ``p_ignore``, ``(1 - p_ignore) / 2``. As in the paper the
model is trained as a language model, and scored on the deterministic tokens only: at every read
instruction it must predict the bit that follows, i.e. the last written bit. Scored by argmax
accuracy over read positions of held-out sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import tasks
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, Task

WRITE, IGNORE, READ = 2, 3, 4  # bits are tokens 0 and 1

VERSION = 2  # 2: train/validation/test streams of the shared protocol


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    n_instr: int = 16  # instruction-bit pairs; T = 2 * n_instr
    p_ignore: float = 0.5  # probability of an ignore; write and read share the rest
    steps: int = 600  # transformer ~1.0 in ~25 s, mamba 1.0 in ~75 s (2-core CPU)

    def validate(self) -> None:
        if self.n_instr < 2:
            raise ValueError("n_instr must be >= 2 (a write and a read)")
        if not 0 <= self.p_ignore < 1:
            raise ValueError("p_ignore must be in [0, 1)")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_instr

    @property
    def vocab_size(self) -> int:
        return 5


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T) with -100 where nothing is scored."""
    rng = np.random.default_rng(seed)
    p_rw = (1 - cfg.p_ignore) / 2
    instr = rng.choice(np.array([WRITE, IGNORE, READ]), size=(n, cfg.n_instr),
                       p=[p_rw, cfg.p_ignore, p_rw])
    instr[:, 0] = WRITE
    instr[:, -1] = READ
    bits = rng.integers(0, 2, (n, cfg.n_instr))
    # the register after each instruction: the bit of the latest write at or before it
    is_write = instr == WRITE
    last_write = np.maximum.accumulate(np.where(is_write, np.arange(cfg.n_instr), 0), axis=1)
    register = np.take_along_axis(bits, last_write, axis=1)
    bits = np.where(instr == READ, register, bits)  # a read's bit is the register
    seq = np.empty((n, cfg.seq_len), dtype=np.int64)
    seq[:, 0::2] = instr
    seq[:, 1::2] = bits
    targets = np.full_like(seq, -100)
    targets[:, 0::2] = np.where(instr == READ, register, -100)  # at a read: the bit that follows
    return seq, targets


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    return _seqtask.run_task(
        cfg, ctx, generate, version=VERSION,
        name="flip_flop", vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        what="read positions",
        hint="raise n_instr so the task has enough distinct sequences")


TASK = tasks.register(Task(
    name="flip_flop", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="accuracy", doc=__doc__ or "", metrics=_seqtask.METRICS,
))
