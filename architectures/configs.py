"""Frozen-dataclass configs built from user mappings, with errors that name the allowed keys."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A config key or value that is not allowed; the message is one line."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(" ".join(str(message).splitlines()), *args)


# Every int a config holds fits a signed 32-bit column (PostgreSQL Integer) and every float is
# finite: a NaN compares False with every bound, so `x <= 0` range checks would let it through.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: error messages stay one short line."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the error being reported
        text = f"<{type(value).__name__}>"
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed_keys(cls: type) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(cls))


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        args = typing.get_args(annotation)
        inner = _type_name(args[0]) if args else "value"
        return f"list of {inner}"
    return getattr(annotation, "__name__", str(annotation))


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Accept ints for float fields and reject everything else that does not fit: bools are
    not ints, ints stay within [INT_MIN, INT_MAX], floats are finite, and a ``tuple[X, ...]``
    field takes a list (never a string, which would be iterated by character) of X."""
    origin = typing.get_origin(annotation)

    def refuse(expected: str) -> ConfigError:
        return ConfigError(f"{owner}: config key {name!r} must be {expected}, got {show(value)}")

    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("float")
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise refuse(f"a finite float (an integer in [{INT_MIN}, {INT_MAX}])")
            return float(value)
        if not math.isfinite(value):
            raise refuse("a finite float")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("int")
        if not INT_MIN <= value <= INT_MAX:
            raise refuse(f"int in [{INT_MIN}, {INT_MAX}]")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation):
            raise refuse(annotation.__name__)
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise refuse(f"a list of {_type_name(args[0]) if args else 'values'}")
        if len(args) == 2 and args[1] is Ellipsis:
            kinds = [args[0]] * len(value)
        elif args and len(args) != len(value):
            raise refuse(f"a list of {len(args)} values")
        else:
            kinds = list(args) or [Any] * len(value)
        for i, (item, kind) in enumerate(zip(value, kinds, strict=True)):
            if kind in (int, float, str, bool) or typing.get_origin(kind) is tuple:
                # checked, not converted: stored configs (and their hashes) keep the values
                _check_type(owner, f"{name}[{i}]", item, kind)
        return tuple(value)
    return value


def build_config(cls: type[C], mapping: Mapping[str, Any], owner: str) -> C:
    """Build ``cls`` from ``mapping``; unknown keys and wrong types raise ConfigError."""
    names = allowed_keys(cls)
    odd = [k for k in mapping if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{owner}: config key {show(odd[0])} is not a string; "
                          f"allowed: {', '.join(names) or '(none)'}")
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
