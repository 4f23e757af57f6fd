"""Flip-flop language modelling (Liu et al. 2023, "Exposing Attention Glitches"): read a register.

A sequence is ``n_instr`` instruction-bit pairs of the paper's FFL(p_ignore) language: ``w b``
writes bit ``b`` to a one-bit register, ``i b`` is ignored (``b`` is random), and ``r b`` reads
it, where ``b`` is always the last written bit. The first instruction is a write, the last two
are ``i`` then ``r`` (so every sequence has a scored read), and the rest are write, ignore or
read with probabilities ``(1 - p_ignore) / 2``, ``p_ignore``, ``(1 - p_ignore) / 2``. The
default is long and sparse (FFL(0.8) at 128 tokens): at a scored read the last write lies ~19
tokens back on average and more than 16 tokens back for ~43% of reads, so the register must be
carried across many ignores.

As in the paper the model is trained as a language model on the deterministic tokens: at a read
instruction it must predict the bit that follows, i.e. the last written bit. Only reads that
follow an ignore are scored (and trained): after a write or a read the previous bit *is* the
register, so "copy the previous bit" would solve them without any memory. On the scored reads
that trivial strategy, the floor, is a coin flip against the ignore's random bit: floor near
chance 0.5. Counting does better without solving the task: the majority of the bits so far
scores ~0.63 on the default (reads echo the register, so its bit is over-represented), and
copying the bit two instructions back ~0.60. Scored by argmax accuracy over the scored read
positions of held-out sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks import _seqtask

WRITE, IGNORE, READ = 2, 3, 4  # bits are tokens 0 and 1

VERSION = 3  # 3: long sparse FFL(0.8), only reads after an ignore scored; chance and floor

FLOOR = "copy the previous bit (the bit of the instruction before the read)"


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    n_instr: int = 64  # instruction-bit pairs; T = 2 * n_instr
    p_ignore: float = 0.8  # probability of an ignore; write and read share the rest
    # d 64, 2 layers, 1 thread on a shared 2-core CPU, fixed LR: lstm 1.00 at 200 steps (3e-3,
    # 19 s); transformer 0.996 at 400 steps (3e-3, 51 s), 0.91 at 600 steps (1e-3, 78 s)
    steps: int = 600

    def validate(self) -> None:
        if self.n_instr < 3:
            raise ValueError(f"n_instr must be >= 3 (a write, an ignore, a read), "
                             f"got {self.n_instr}")
        if not 0 <= self.p_ignore < 1:
            raise ValueError(f"p_ignore must be in [0, 1), got {self.p_ignore}")
        _seqtask.check_budget(self)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_instr

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (train and test alike)."""
        return self.seq_len

    @property
    def vocab_size(self) -> int:
        return 5


def generate(cfg: Config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences (n, T) and targets (n, T): the register at each read instruction that
    follows an ignore, -100 elsewhere."""
    rng = np.random.default_rng(seed)
    p_rw = (1 - cfg.p_ignore) / 2
    instr = rng.choice(np.array([WRITE, IGNORE, READ]), size=(n, cfg.n_instr),
                       p=[p_rw, cfg.p_ignore, p_rw])
    instr[:, 0] = WRITE
    instr[:, -2:] = (IGNORE, READ)
    bits = rng.integers(0, 2, (n, cfg.n_instr))
    # the register after each instruction: the bit of the latest write at or before it
    is_write = instr == WRITE
    last_write = np.maximum.accumulate(np.where(is_write, np.arange(cfg.n_instr), 0), axis=1)
    register = np.take_along_axis(bits, last_write, axis=1)
    bits = np.where(instr == READ, register, bits)  # a read's bit is the register
    seq = np.empty((n, cfg.seq_len), dtype=np.int64)
    seq[:, 0::2] = instr
    seq[:, 1::2] = bits
    after_ignore = np.zeros_like(is_write)
    after_ignore[:, 1:] = instr[:, :-1] == IGNORE
    targets = np.full_like(seq, -100)
    targets[:, 0::2] = np.where((instr == READ) & after_ignore, register, -100)
    return seq, targets


def chance(cfg: Config) -> float:
    """A uniform guess over the two bits."""
    return 0.5


def floor(cfg: Config, data: _seqtask.Data) -> tuple[float, str]:
    """Accuracy of :data:`FLOOR` over the scored positions of ``data``."""
    tokens, targets = data
    guess = np.full_like(tokens, -1)
    guess[:, 1:] = tokens[:, :-1]  # the token before a read instruction is the previous bit
    scored = targets != -100
    return float((guess[scored] == targets[scored]).mean()), FLOOR


def problem(cfg: Config) -> _seqtask.Problem:
    """What the protocol (:func:`_seqtask.run_task`) needs of this task for ``cfg``."""
    return _seqtask.Problem(
        generate, cfg.vocab_size, cfg.seq_len, what="read positions after an ignore",
        hint="raise n_instr so the task has enough distinct sequences", chance=chance(cfg),
        floor=lambda t: floor(cfg, t))


TASK = _seqtask.register_generated(
    "flip_flop", version=VERSION, config_cls=Config, problem=problem, doc=__doc__ or "")
run = TASK.run
