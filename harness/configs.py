"""Frozen-dataclass configs built from user mappings, with errors that name the allowed keys."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message is one line."""


def allowed_keys(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Accept ints for float fields and reject everything else that does not fit."""
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        ok = isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))
        if not ok:
            raise ConfigError(
                f"{owner}: config key {name!r} must be {annotation.__name__}, got {value!r}"
            )
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def build_config(cls: type[C], mapping: Mapping[str, Any], owner: str) -> C:
    """Build ``cls`` from ``mapping``; unknown keys and wrong types raise ConfigError."""
    names = allowed_keys(cls)
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise ConfigError(
            f"{owner}: unknown config key {unknown[0]!r}; allowed: {', '.join(names) or '(none)'}"
        )
    hints = typing.get_type_hints(cls)
    values = {k: _check_type(owner, k, v, hints[k]) for k, v in mapping.items()}
    cfg = cls(**values)
    check = getattr(cfg, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as err:
            raise ConfigError(f"{owner}: {err}") from None
    return cfg


def as_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
