"""Values both SQLite and PostgreSQL store: what a row holds is made portable before insert.

NaN and infinity become null (the reason noted), numpy and torch values plain numbers and
lists, NUL bytes are stripped, a string longer than its column is shortened to a prefix and a
hash, and an integer outside the 32-bit INTEGER range is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Float, Integer, String

INT_RANGE = (-(2**31), 2**31 - 1)  # INTEGER on PostgreSQL; SQLite is held to the same
MAX_PATHS = 20  # non-finite JSON paths listed per row; further ones are only counted
TRUNCATION_MARK = "~"  # long text: kept prefix + "~" + 8 hex digits of the whole's sha256


def sanitize(model: Any, row: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A copy of ``row`` that SQLite and PostgreSQL both store, and what was changed.

    Returns ``(row, notes, non_finite)``. Float columns: NaN/+-inf become NULL (noted as
    ``"value was nan"``). JSON columns: numpy/torch values become Python numbers and lists,
    non-finite floats become null (their paths, e.g. ``extra.loss_curve[3]``, are returned in
    ``non_finite``), dict keys that JSON cannot hold and any other value that is not JSON
    become their ``repr``. Strings lose NUL bytes (noted). A string longer than its column
    keeps its first characters, then ``~`` and 8 hex digits of the whole string's sha256
    (so long names with a common prefix stay distinct), exactly filling the column (noted).
    An integer outside the 32-bit INTEGER range raises ``ValueError``."""
    columns = model.__table__.columns
    out = dict(row)
    notes: list[str] = []
    non_finite: list[str] = []
    for name, value in row.items():
        column = columns.get(name)
        if column is None or value is None:
            continue
        kind = column.type
        if isinstance(kind, JSON):
            nul: list[str] = []
            out[name] = _plain(value, name, non_finite, nul)
            notes += [f"NUL bytes stripped from {path}" for path in nul]
            continue
        value = _native(value)
        if isinstance(kind, Float) and isinstance(value, (int, float)) and not isinstance(
                value, bool):
            value = float(value)
            if not math.isfinite(value):
                notes.append(f"{name} was {value!r}")
                value = None
        elif isinstance(kind, Integer) and isinstance(value, int) and not isinstance(value, bool):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise ValueError(
                    f"{model.__tablename__}.{name} = {value} does not fit its 32-bit INTEGER "
                    f"column ({INT_RANGE[0]}..{INT_RANGE[1]}); nothing was stored")
        elif isinstance(kind, String) and isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "")
                notes.append(f"NUL bytes stripped from {name}")
            if kind.length and len(value) > kind.length:
                notes.append(f"{name} truncated from {len(value)} to {kind.length} characters")
                value = _truncate(value, kind.length)
        out[name] = value
    return out, notes, non_finite


def _truncate(value: str, length: int) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    tail = TRUNCATION_MARK + digest
    return value[:max(length - len(tail), 0)] + tail[:length]


def _native(value: Any) -> Any:
    """numpy / torch scalars and arrays as Python numbers and lists; anything else as is."""
    if type(value).__module__.split(".")[0] in ("numpy", "torch") and hasattr(value, "tolist"):
        try:
            return value.tolist()
        except Exception:  # e.g. a tensor that cannot leave its device
            return value
    return value


def _plain(value: Any, path: str, non_finite: list[str], nul: list[str]) -> Any:
    """A JSON-safe copy of ``value``; records the paths of what had to change."""
    value = _native(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        non_finite.append(path)
        return None
    if isinstance(value, str):
        if "\x00" in value:
            nul.append(path)
            return value.replace("\x00", "")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not (key is None or isinstance(key, (str, int, float, bool))):
                key = repr(key)
            if isinstance(key, str) and "\x00" in key:
                nul.append(f"{path} (a key)")
                key = key.replace("\x00", "")
            out[key] = _plain(item, f"{path}.{key}", non_finite, nul)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{path}[{i}]", non_finite, nul) for i, item in enumerate(value)]
    return _plain(repr(value), path, non_finite, nul)
