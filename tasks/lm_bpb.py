"""Byte-level language modelling on a real text corpus present offline everywhere: bits per byte.

The corpus ships with Python itself, so every machine has it without a download:

- ``pydoc_topics`` (default): the language reference topics behind ``help()``
  (``pydoc_data.topics``, ~470 kB of English prose and grammar), concatenated in key order;
- ``stdlib_sources``: the source of a fixed list of pure-Python standard-library modules.

Either changes between Python releases, so the corpus is identified by the sha256 of its bytes,
stored with every row (``corpus_sha256``): compare bpb only between rows of the same hash.
The bytes are split contiguously: the first 90% train, the next 5% validate (LR choice and
early stopping), the last 5% test. A model (vocab 256, one token per byte) is trained on random
windows of ``seq_len + 1`` training bytes under the shared protocol.

**Deduplication.** A contiguous split is not enough: pydoc topics repeat passages across keys,
and on Python 3.11.7 36.0% of the test bytes lie inside verbatim matches of >= 32 bytes with
the training text (23.1% inside matches of >= 64 bytes): bytes a model can recall rather than
predict. Every test byte inside a verbatim match of >= ``dedup_len`` bytes with the training
split is therefore never scored (it may still serve as context). Validation is deduplicated
the same way, so the LR choice and early stopping see the same kind of text as the test.

**Scoring windows.** Held-out bytes are read in windows of ``seq_len`` inputs; a target byte
is scored only once it has at least ``min_context`` bytes of context inside its window, so
window k starts at ``k * (seq_len - min_context + 1)`` and scores its last
``seq_len - min_context + 1`` targets; consecutive windows tile the split exactly (a last
window, moved back to end with the split, scores only the bytes not scored yet). The first
``min_context`` bytes of a split are context only. Bits per byte is the mean next-byte
cross-entropy in bits over the scored bytes. Each row stores the contamination before
deduplication and the contamination of the scored bytes, recomputed by a second algorithm
(0 unless deduplication is broken), the uniform chance (8 bits) and the floor: the bpb of a
byte-unigram model of the training bytes on the same scored bytes.

The trained model is saved as a checkpoint by default (with its ``seq_len``), so the
``lm_eval`` task can evaluate it (``checkpoint: "task:lm_bpb"``) instead of retraining.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import tasks
from tasks import _seqtask
from tasks.base import Metric, MetricSpec, Task
from tasks.instruments.context import CellContext

VERSION = 2  # 2: deduplicated held-out bytes, min_context, eval_bytes counts scored bytes
CORPORA = ("pydoc_topics", "stdlib_sources")
STDLIB_MODULES = ("argparse", "bisect", "calendar", "colorsys", "difflib", "fnmatch", "heapq",
                  "shlex", "string", "textwrap")
VOCAB = 256
CHANCE_BPB = 8.0  # a uniform guess over 256 bytes
BPB = MetricSpec("bpb", "bits/byte", False,
                 "mean next-byte cross-entropy in bits over held-out test bytes that are not "
                 "inside verbatim matches with the training text")
SPLIT = (0.90, 0.95)  # train | validation | test boundaries, as fractions of the corpus
IGNORE = -100  # target of a byte that is not scored (context only, or a training repeat)
FLOOR_STRATEGY = ("byte-unigram model of the training bytes (add-one smoothed counts), "
                  "on the same scored test bytes")


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    corpus: str = "pydoc_topics"
    seq_len: int = 128  # bytes of context per training and scoring window
    # measured at d_model 64, 2 layers, 1 thread on a busy 2-core CPU: transformer 1.95 bpb
    # (107 s), lstm 1.78 (147 s), mamba 1.79 (242 s) (version 1: before deduplication)
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    eval_bytes: int = 0  # scored test bytes (the first ones after deduplication); 0: all
    dedup_len: int = 32  # held-out bytes inside a verbatim train match this long are not scored
    min_context: int = 64  # bytes of context before every scored byte (< seq_len)
    save_checkpoint: bool = True  # lm_eval can reuse the trained model

    def validate(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {', '.join(CORPORA)}")
        if self.seq_len < 2 or self.eval_bytes < 0:
            raise ValueError("seq_len must be >= 2 and eval_bytes >= 0")
        if self.dedup_len < 1:
            raise ValueError(f"dedup_len must be >= 1, got {self.dedup_len}")
        if not 1 <= self.min_context < self.seq_len:
            raise ValueError(f"min_context must be in [1, seq_len - 1] = [1, {self.seq_len - 1}]"
                             f", got {self.min_context}")
        _seqtask.check_budget(self)

    @property
    def vocab_size(self) -> int:
        return VOCAB

    @property
    def model_seq_len(self) -> int:
        """The longest sequence a model reads (training and scoring windows alike)."""
        return self.seq_len


@cache
def corpus_bytes(name: str) -> bytes:
    """The corpus as bytes; ValueError (one line) if this Python lacks it."""
    if name == "pydoc_topics":
        try:
            from pydoc_data.topics import topics
        except ImportError:
            raise ValueError("corpus pydoc_topics: this Python has no pydoc_data "
                             "(use corpus: stdlib_sources)") from None
        return "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    if name == "stdlib_sources":
        parts = []
        for mod in STDLIB_MODULES:
            spec = importlib.util.find_spec(mod)
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                raise ValueError(f"corpus stdlib_sources: module {mod} has no source here")
            parts.append(Path(spec.origin).read_bytes())
        return b"\n".join(parts)
    raise ValueError(f"corpus must be one of {', '.join(CORPORA)}")


def splits(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous train, validation and test byte arrays (uint8)."""
    data = np.frombuffer(corpus_bytes(name), dtype=np.uint8)
    a, b = int(SPLIT[0] * len(data)), int(SPLIT[1] * len(data))
    return data[:a], data[a:b], data[b:]


def windows(data: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of every window of ``seq_len + 1`` bytes starting each ``stride``."""
    starts = np.arange(0, len(data) - seq_len, stride)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    chunk = data[idx].astype(np.int64)
    return chunk[:, :-1], chunk[:, 1:]


# ---------------------------------------------------------------------------------------------
# deduplication against the training text


def ngrams(data: np.ndarray, n: int) -> np.ndarray:
    """Every ``n``-byte substring of ``data`` as one opaque ``np.void`` item (compared bytewise),
    ``len(data) - n + 1`` of them (none if ``data`` is shorter)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if len(data) < n:
        return np.empty(0, dtype=np.dtype((np.void, n)))
    grams = np.lib.stride_tricks.sliding_window_view(data, n)  # (len - n + 1, n)
    return np.ascontiguousarray(grams).view(np.dtype((np.void, n))).ravel()


def match_mask(text: np.ndarray, train_grams: np.ndarray, n: int) -> np.ndarray:
    """True at every byte of ``text`` inside a verbatim match of >= ``n`` bytes with the
    training text whose sorted, unique ``n``-grams are ``train_grams``.

    A match of any length >= n is a union of n-byte matches, so it is enough to find each
    text position p where ``text[p:p+n]`` occurs in training and cover bytes p .. p+n-1.
    Exact: n-grams are compared as bytes (sort and search, no hashing).
    """
    starts = np.flatnonzero(np.isin(ngrams(text, n), train_grams))
    edges = np.zeros(len(text) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + n, -1)
    return np.cumsum(edges[:-1]) > 0


def recheck_contamination(train: bytes, text: bytes, positions: np.ndarray, n: int) -> float:
    """Fraction of ``text[positions]`` inside a verbatim match of >= ``n`` bytes with
    ``train``, by another algorithm than :func:`match_mask`: a hash set of the text's n-grams
    that cover a position, streamed against every n-gram of ``train``."""
    if not len(positions):
        return 0.0
    starts = np.unique((positions[:, None] - np.arange(n)[None, :]).ravel())
    starts = starts[(starts >= 0) & (starts <= len(text) - n)]
    wanted = {text[q : q + n] for q in starts.tolist()}
    found = {g for i in range(len(train) - n + 1) if (g := train[i : i + n]) in wanted}
    covered = set()
    for q in starts.tolist():
        if text[q : q + n] in found:
            covered.update(range(q, q + n))
    return sum(p in covered for p in positions.tolist()) / len(positions)


# ---------------------------------------------------------------------------------------------
# scoring windows


def eval_windows(data: np.ndarray, seq_len: int, min_context: int, drop: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, positions), each (K, seq_len): windows that score every byte of
    ``data`` from ``min_context`` on exactly once, with at least ``min_context`` bytes of
    context in its window; ``positions`` is the index in ``data`` of each target byte.

    Targets are ``IGNORE`` where a byte is context only and where ``drop`` (bool, one per byte
    of ``data``) is set. Needs ``len(data) > seq_len`` and ``1 <= min_context < seq_len``.
    """
    last = len(data) - 1 - seq_len  # the last start with seq_len + 1 bytes
    starts = list(range(0, last + 1, seq_len - min_context + 1))
    if starts[-1] != last:
        starts.append(last)  # ends with the split; scores only what is not scored yet
    starts_a = np.array(starts)
    ends = starts_a + seq_len  # position of each window's last target
    first = np.maximum(starts_a + min_context, np.concatenate([[0], ends[:-1] + 1]))
    pos = starts_a[:, None] + np.arange(1, seq_len + 1)[None, :]  # (K, T)
    inputs = data[pos - 1].astype(np.int64)
    targets = data[pos].astype(np.int64)
    scored = (pos >= first[:, None]) & ~drop[pos]
    targets[~scored] = IGNORE
    return inputs, targets, pos


def first_scored(targets: np.ndarray, n: int) -> np.ndarray:
    """``targets`` with only the first ``n`` scored bytes (in window order) still scored."""
    scored = targets != IGNORE
    keep = scored & (np.cumsum(scored.ravel()).reshape(scored.shape) <= n)
    return np.where(keep, targets, IGNORE)


def held_out(data: np.ndarray, train_grams: np.ndarray, cfg: Config, limit: int = 0
             ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, dict[str, Any]]:
    """Deduplicated scoring windows of one held-out split: ((inputs, targets), positions of
    the targets, facts). ``limit`` > 0 keeps the first ``limit`` scored bytes only (a
    ValueError if fewer survive deduplication)."""
    drop = match_mask(data, train_grams, cfg.dedup_len)
    x, y, pos = eval_windows(data, cfg.seq_len, cfg.min_context, np.zeros_like(drop))
    candidates = y != IGNORE  # what would be scored without deduplication
    y = np.where(drop[pos], IGNORE, y)
    available = int((y != IGNORE).sum())
    if limit:
        if available < limit:
            raise ValueError(f"lm_bpb: eval_bytes {limit} but only {available} test bytes "
                             "survive deduplication; lower eval_bytes (0: all)")
        y = first_scored(y, limit)
        last = int(pos[y != IGNORE].max())
        candidates &= pos <= last
    if not (y != IGNORE).any():
        raise ValueError("lm_bpb: no held-out byte survives deduplication; raise dedup_len")
    keep = (y != IGNORE).any(1)
    n_cand = int(candidates.sum())
    facts = {"bytes_scored": int((y != IGNORE).sum()),
             "bytes_dropped": int((candidates & drop[pos]).sum()),
             "contamination_before": float((candidates & drop[pos]).sum() / max(1, n_cand))}
    return (x[keep], y[keep]), pos[keep], facts


def unigram_bpb(train: np.ndarray, targets: np.ndarray) -> float:
    """Bits per byte on the scored ``targets`` (``IGNORE`` elsewhere) of a byte-unigram model
    fitted on ``train`` with add-one smoothing: p(b) = (count(b) + 1) / (N + 256)."""
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    bits = -np.log2(counts / counts.sum())
    return float(bits[targets[targets != IGNORE]].mean())


@torch.inference_mode()
def bits_per_byte(model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray],
                  ctx: CellContext, batch_size: int = 64) -> float:
    """Mean next-byte cross-entropy in bits over the scored target bytes of ``data`` (targets
    equal to ``IGNORE`` are context only)."""
    nats = 0.0
    count = 0
    for start in range(0, len(data[0]), batch_size):
        x = torch.from_numpy(data[0][start : start + batch_size]).to(ctx.torch_device)
        y = torch.from_numpy(data[1][start : start + batch_size]).to(ctx.torch_device)
        logits = model(x).float()  # (B, T, V)
        nats += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum",
                                      ignore_index=IGNORE))
        count += int((y != IGNORE).sum())
    if not count:
        raise ValueError("lm_bpb: nothing to score (every target is context or dropped)")
    return nats / count / math.log(2)


# ---------------------------------------------------------------------------------------------
# the run


def _grid_in_bpb(grid: dict[str, Any]) -> None:
    """The LR search maximised -bpb: store bpb in every candidate's record."""
    for rec in grid.values():
        rec["val_bpb"] = -rec.pop("val_accuracy")
        rec["curve"] = [[step, -value] for step, value in rec["curve"]]


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    raw = corpus_bytes(cfg.corpus)
    digest = hashlib.sha256(raw).hexdigest()
    train_b, val_b, test_b = splits(cfg.corpus)
    if len(val_b) <= cfg.seq_len or len(test_b) <= cfg.seq_len:
        raise ValueError(f"lm_bpb: seq_len {cfg.seq_len} is longer than the validation or test "
                         f"split ({len(val_b)} / {len(test_b)} bytes)")
    grams = np.unique(ngrams(train_b, cfg.dedup_len))
    train_set = windows(train_b, cfg.seq_len, stride=max(1, cfg.seq_len // 4))
    val_set, _, val_facts = held_out(val_b, grams, cfg)
    test_set, test_pos, test_facts = held_out(test_b, grams, cfg, limit=cfg.eval_bytes)

    def neg_bpb(model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
        return -bits_per_byte(model, data, ctx)

    model, lr, result, grid = _seqtask.fit(
        lambda: ctx.build_model(vocab_size=VOCAB), train_set, val_set, ctx, cfg, score=neg_bpb)
    bpb = bits_per_byte(model, test_set, ctx)
    _grid_in_bpb(grid)
    n_bytes = test_facts["bytes_scored"]
    contamination = recheck_contamination(train_b.tobytes(), test_b.tobytes(),
                                          test_pos[test_set[1] != IGNORE], cfg.dedup_len)
    facts = _seqtask.fit_facts(cfg, lr, result, grid, val_set)
    val = facts.pop("val_accuracy")  # the score fit maximised: -bpb
    extra: dict[str, Any] = {
        "corpus": cfg.corpus, "corpus_sha256": digest, "corpus_bytes": len(raw),
        "train_bytes": len(train_b), "val_bytes": len(val_b), "test_bytes_scored": n_bytes,
        "test_bytes_dropped": test_facts["bytes_dropped"],
        "contamination_before": test_facts["contamination_before"],
        "contamination": contamination, "dedup_len": cfg.dedup_len,
        "min_context": cfg.min_context, "val_bytes_scored": val_facts["bytes_scored"],
        "val_contamination_before": val_facts["contamination_before"],
        "chance": CHANCE_BPB, "floor": unigram_bpb(train_b, test_set[1]),
        "floor_strategy": FLOOR_STRATEGY,
        **_seqtask.budget_facts(cfg, model, cfg.seq_len, result.steps_run), **facts,
        "val_bpb": -val if val is not None else None,
    }
    if cfg.save_checkpoint:
        extra["checkpoint"] = _seqtask.save_checkpoint(model, ctx, "lm_bpb", {
            "lr": lr, "bpb": bpb, "corpus_sha256": digest, "seq_len": cfg.seq_len})
    method = (f"mean next-byte cross-entropy in bits over {n_bytes} held-out bytes "
              f"({cfg.corpus}, sha256 {digest[:12]}), each with >= {cfg.min_context} bytes of "
              f"context and outside every >= {cfg.dedup_len}-byte verbatim match with training")
    return [
        BPB.metric(bpb, method=method, n_samples=n_bytes, extra=extra),
        _seqtask.TRAIN_LOSS.metric(result.train_loss, method=_seqtask.TRAIN_LOSS.doc,
                                   extra=extra),
    ]


TASK = tasks.register(Task(
    name="lm_bpb", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="bpb", doc=__doc__ or "", metrics=(BPB, _seqtask.TRAIN_LOSS),
))
