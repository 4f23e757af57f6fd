"""Content ids: canonical hashes of what a cell measures (no torch, no registries).

A *cell id* hashes the whole identity (variant, task, their configs, versions and source
digests, seed, device, dtype, threads); a *setting id* hashes only what is measured, whatever
the code's version and seed: the series that history, regression detection and
``--rerun none`` follow.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SETTING_KEYS = ("arch", "arch_config", "task", "task_config", "device", "dtype", "threads")


def canonical_hash(obj: Any, length: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), first ``length`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def setting_of(identity: dict[str, Any]) -> dict[str, Any]:
    """The setting part of a cell identity or of a stored result row."""
    return {k: identity[k] for k in SETTING_KEYS}


def setting_id(row: dict[str, Any]) -> str:
    return canonical_hash(setting_of(row))
