"""Byte-level language modelling on a real text corpus present offline everywhere: bits per byte.

The corpus ships with Python itself, so every machine has it without a download:

- ``pydoc_topics`` (default): the language reference topics behind ``help()``
  (``pydoc_data.topics``, ~470 kB of English prose and grammar), concatenated in key order;
- ``stdlib_sources``: the source of a fixed list of pure-Python standard-library modules.

Either changes between Python releases, so the corpus is identified by the sha256 of its bytes,
stored with every row (``corpus_sha256``): compare bpb only between rows of the same hash.
The bytes are split contiguously: the first 90% train, the next 5% validate (LR choice and
early stopping), the last 5% test, so no test text is ever trained on. A model (vocab 256, one
token per byte) is trained on random windows of ``seq_len + 1`` bytes under the shared protocol
and scored on non-overlapping test windows: bits per byte is the mean next-byte cross-entropy
in bits over every predicted byte. The trained model is saved as a checkpoint by default, so
the ``lm_eval`` task can evaluate it (``checkpoint: "task:lm_bpb"``) instead of retraining.
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
from harness.context import CellContext
from tasks import _seqtask
from tasks.base import Metric, MetricSpec, Task

VERSION = 1
CORPORA = ("pydoc_topics", "stdlib_sources")
STDLIB_MODULES = ("argparse", "bisect", "calendar", "colorsys", "difflib", "fnmatch", "heapq",
                  "shlex", "string", "textwrap")
VOCAB = 256
BPB = MetricSpec("bpb", "bits/byte", False,
                 "mean next-byte cross-entropy in bits over held-out test bytes")
SPLIT = (0.90, 0.95)  # train | validation | test boundaries, as fractions of the corpus


@dataclass(frozen=True)
class Config(_seqtask.TrainConfig):
    corpus: str = "pydoc_topics"
    seq_len: int = 128  # bytes of context per training window
    # measured at d_model 64, 2 layers, 1 thread on a busy 2-core CPU: transformer 1.95 bpb
    # (107 s), lstm 1.78 (147 s), mamba 1.79 (242 s); a uniform guess is 8 bits/byte
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    eval_bytes: int = 24_576  # test bytes scored (from the start of the test split); 0: all
    save_checkpoint: bool = True  # lm_eval can reuse the trained model

    def validate(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {', '.join(CORPORA)}")
        if self.seq_len < 2 or self.eval_bytes < 0:
            raise ValueError("seq_len must be >= 2 and eval_bytes >= 0")
        _seqtask.check_budget(self)

    @property
    def vocab_size(self) -> int:
        return VOCAB


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


@torch.inference_mode()
def bits_per_byte(model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray],
                  ctx: CellContext, batch_size: int = 64) -> float:
    """Mean next-byte cross-entropy in bits over every target byte of ``data``."""
    nats = 0.0
    count = 0
    for start in range(0, len(data[0]), batch_size):
        x = torch.from_numpy(data[0][start : start + batch_size]).to(ctx.torch_device)
        y = torch.from_numpy(data[1][start : start + batch_size]).to(ctx.torch_device)
        logits = model(x).float()
        nats += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
        count += y.numel()
    return nats / count / math.log(2)


def run(cfg: Config, ctx: CellContext) -> list[Metric]:
    raw = corpus_bytes(cfg.corpus)
    digest = hashlib.sha256(raw).hexdigest()
    train_b, val_b, test_b = splits(cfg.corpus)
    if len(val_b) <= cfg.seq_len or len(test_b) <= cfg.seq_len:
        raise ValueError(f"lm_bpb: seq_len {cfg.seq_len} is longer than the validation or test "
                         f"split ({len(val_b)} / {len(test_b)} bytes)")
    if cfg.eval_bytes:
        test_b = test_b[: cfg.eval_bytes + 1]
    train_set = windows(train_b, cfg.seq_len, stride=max(1, cfg.seq_len // 4))
    val_set = windows(val_b, cfg.seq_len, stride=cfg.seq_len)
    test_set = windows(test_b, cfg.seq_len, stride=cfg.seq_len)

    def neg_bpb(model: torch.nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
        return -bits_per_byte(model, data, ctx)

    model, lr, result, grid = _seqtask.fit(
        lambda: ctx.build_model(vocab_size=VOCAB), train_set, val_set, ctx, cfg, score=neg_bpb)
    bpb = bits_per_byte(model, test_set, ctx)
    for rec in grid.values():
        rec["val_bpb"] = -rec.pop("val_accuracy")
    n_bytes = int(test_set[1].size)
    facts = _seqtask.fit_facts(cfg, lr, result, grid, val_set)
    val = facts.pop("val_accuracy")  # the score fit maximised: -bpb
    extra: dict[str, Any] = {
        "corpus": cfg.corpus, "corpus_sha256": digest, "corpus_bytes": len(raw),
        "train_bytes": len(train_b), "val_bytes": len(val_b), "test_bytes_scored": n_bytes,
        **_seqtask.budget_facts(cfg, model, cfg.seq_len, result.steps_run), **facts,
        "val_bpb": -val if val is not None else None,
    }
    if cfg.save_checkpoint:
        extra["checkpoint"] = _seqtask.save_checkpoint(
            model, ctx, "lm_bpb", {"lr": lr, "bpb": bpb, "corpus_sha256": digest})
    return [
        Metric(name=BPB.name, unit=BPB.unit, value=bpb, higher_is_better=BPB.higher_is_better,
               method=f"mean next-byte cross-entropy in bits over {n_bytes} held-out bytes "
                      f"({cfg.corpus}, sha256 {digest[:12]})", n_samples=n_bytes, extra=extra),
        Metric(name=_seqtask.TRAIN_LOSS.name, unit=_seqtask.TRAIN_LOSS.unit,
               value=result.train_loss, higher_is_better=False, method=_seqtask.TRAIN_LOSS.doc,
               extra=extra),
    ]


TASK = tasks.register(Task(
    name="lm_bpb", kind="accuracy", version=VERSION, config_cls=Config, run=run,
    headline="bpb", doc=__doc__ or "", metrics=(BPB, _seqtask.TRAIN_LOSS),
))
