"""Splits and the data cache of every synthetic task.

Train, validation and test sets come from separate seeded streams; validation rows seen in train
and test rows seen in train or validation are dropped, so the three are disjoint. Generated
splits are cached on disk under a content hash of (task, version, data config, seed, generator
source), so every variant of a suite trains on the very same arrays.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from tasks._seqconfig import TRAIN_FIELDS, TrainConfig

CACHE_ENV = "ARCHBENCH_DATA_CACHE"

Data = tuple[np.ndarray, np.ndarray]
Generate = Callable[[Any, int, int], Data]  # (cfg, n, seed) -> (tokens, targets)
# A task's trivial-strategy baseline: its accuracy on a test set's scored positions and a
# one-line description of the strategy (e.g. "copy the previous bit").
Floor = Callable[[Data], "tuple[float, str]"]


def stream(seed: int, split: int) -> int:
    """Seed of one split's stream: train 3s, test 3s + 1, validation 3s + 2 (never shared)."""
    return 3 * seed + split


def _drop_seen(data: Data, seen: set[bytes]) -> Data:
    keep = np.array([row.tobytes() not in seen for row in data[0]], dtype=bool)
    return data[0][keep], data[1][keep]


def disjoint_splits(generate: Generate, cfg: TrainConfig, seed: int, *, name: str = "task",
                    hint: str = "", allow_empty: bool = False,
                    with_val: bool = False) -> tuple[Data, ...]:
    """(train, test), or (train, val, test) with ``with_val``, from separate seeded streams,
    made disjoint by dropping repeats.

    Raises ValueError when every test sequence also occurs in training (``hint`` says how to
    make the task roomier), unless ``allow_empty``.
    """
    train = generate(cfg, cfg.train_size, stream(seed, 0))
    seen = {row.tobytes() for row in train[0]}
    val = None
    if with_val and cfg.val_size > 0:
        val = _drop_seen(generate(cfg, cfg.val_size, stream(seed, 2)), seen)
        seen |= {row.tobytes() for row in val[0]}
    test = _drop_seen(generate(cfg, cfg.test_size, stream(seed, 1)), seen)
    if not len(test[0]) and not allow_empty:
        raise ValueError(f"{name}: every test sequence also occurs in training"
                         + (f"; {hint}" if hint else ""))
    if not with_val:
        return train, test
    if val is None or not len(val[0]):
        val = (train[0][:0], train[1][:0])
    return train, val, test


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "archbench" / "data")


def generator_source(cfg: TrainConfig) -> str:
    """sha256 of the code that makes a task's data: the module defining its config (where its
    generator lives) and the split code here. A generator fix without a version bump then
    still misses the cache instead of reusing stale arrays."""
    module = sys.modules[type(cfg).__module__]
    try:
        code = inspect.getsource(module)
    except (OSError, TypeError):  # no source on disk (frozen or generated): the name stands in
        code = module.__name__
    code += inspect.getsource(disjoint_splits) + inspect.getsource(_drop_seen)
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def data_key(name: str, version: int, cfg: TrainConfig, seed: int) -> str:
    """Content hash of what determines a task's data: name, version, data config, seed and the
    generator's source (:func:`generator_source`)."""
    conf = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in TRAIN_FIELDS}
    blob = json.dumps({"task": name, "version": version, "config": conf, "seed": seed,
                       "source": generator_source(cfg)},
                      sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _store(path: Path, splits: tuple[Data, ...]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        arrays = {f"{xy}{i}": d[j] for i, d in enumerate(splits) for j, xy in enumerate("xy")}
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: concurrent writers leave one whole file
    except OSError:
        pass  # a read-only home still runs, just without the cache


def cached(name: str, version: int, cfg: TrainConfig, seed: int,
           make: Callable[[], tuple[Data, ...]]) -> tuple[tuple[Data, ...], str]:
    """The splits ``make()`` returns, read from the cache under their content hash if there,
    else made and stored; and the hash.

    The cache is an optimisation only: a missing or unreadable entry is made again, and the
    arrays are identical either way (generation is deterministic per seed).
    """
    key = data_key(name, version, cfg, seed)
    path = cache_dir() / f"{name}-{key}.npz"
    try:
        with np.load(path) as z:
            n = len(z.files) // 2
            return tuple((z[f"x{i}"], z[f"y{i}"]) for i in range(n)), key
    except (OSError, KeyError, ValueError):
        pass
    splits = make()
    _store(path, splits)
    return splits, key


def cached_splits(generate: Generate, cfg: TrainConfig, seed: int, *, name: str, version: int,
                  hint: str = "") -> tuple[tuple[Data, Data, Data], str]:
    """(train, val, test) of :func:`disjoint_splits`, through the cache; and their hash."""
    splits, key = cached(name, version, cfg, seed, lambda: disjoint_splits(
        generate, cfg, seed, name=name, hint=hint, with_val=True))
    train, val, test = splits
    return (train, val, test), key
