"""Fair sizing: the residual width that brings each variant to the same parameter budget.

The fairness checklist (LRA; *Never Train from Scratch*) asks for one parameter budget across
variants. `size_for_budget` searches `d_model` (everything else as the caller gave it) for the
total parameter count nearest the budget; widths a variant refuses (heads that do not split the
width into even halves, ...) raise ConfigError and are skipped. Where no width is within the
tolerance and the caller did not pin `n_heads`, fewer heads are tried (a finer width grid).
Models are counted on the `meta` device, so no weights are allocated (CPU as a fallback).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ._common import ConfigError
from .backbone import build, config_keys, resolve_config

__all__ = ["Sized", "count_params", "size_all", "size_for_budget"]

MAX_D_MODEL = 1 << 14  # widest width searched


@dataclass(frozen=True)
class Sized:
    """A variant sized to a budget: its resolved config (with the chosen d_model) and counts."""

    name: str
    config: dict[str, Any]
    total_params: int
    active_params: int  # parameters one token passes through (MoE); else equal to total
    budget: int
    rel_error: float  # (total_params - budget) / budget


def count_params(name: str, *, non_embedding: bool = False, **config: Any) -> tuple[int, int]:
    """(total, active) parameters of `name` built with `config`, without allocating weights.

    `non_embedding` leaves out the token embedding and the output head (Kaplan et al.'s
    count), which scale with the vocabulary rather than with the architecture: a budget in
    these holds whatever vocabulary a task uses. Builds on the `meta` device (CPU if a mixer
    cannot be built there) inside a forked RNG, so the caller's global random state is
    untouched. ConfigError propagates.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                model = build(name, **config)
        except ConfigError:
            raise
        except (RuntimeError, NotImplementedError, TypeError):  # an op without a meta kernel
            model = build(name, **config)
    total = model.num_params()
    active = total
    if "active" in inspect.signature(model.num_params).parameters:
        active = model.num_params(active=True)
    if non_embedding:
        vocab = model.embed.weight.numel()
        if model.head.weight is not model.embed.weight:  # an untied head counts once more
            vocab += model.head.weight.numel()
        total, active = total - vocab, active - vocab
    return total, active


CountFn = Callable[[int], "tuple[int, int] | None"]  # d_model -> (total, active) or None


def _counter(name: str, config: dict[str, Any], non_embedding: bool = False) -> CountFn:
    """d_model -> (total, active), or None where the variant refuses that width; memoised."""
    seen: dict[int, tuple[int, int] | None] = {}

    def count(d: int) -> tuple[int, int] | None:
        if d not in seen:
            try:
                seen[d] = count_params(name, **config, d_model=d, non_embedding=non_embedding)
            except ConfigError:
                seen[d] = None
        return seen[d]

    return count


def _first_valid(count: CountFn, d: int, limit: int) -> int | None:
    """The narrowest width in [d, limit] the variant accepts."""
    return next((w for w in range(d, limit + 1) if count(w) is not None), None)


def _first_valid_below(count: CountFn, d: int) -> int | None:
    """The widest width below d the variant accepts."""
    return next((w for w in range(d - 1, 0, -1) if count(w) is not None), None)


def _total(count: CountFn, width: int | None) -> float:
    counted = None if width is None else count(width)
    return float("inf") if counted is None else counted[0]


def _closest_width(count: CountFn, budget: int) -> int | None:
    """The accepted width whose total is nearest `budget` (totals grow with width).

    f(d) = total of the first accepted width >= d is non-decreasing, so doubling brackets the
    first d with f(d) >= budget and bisection finds it; the answer is that width or the
    accepted width just below it.
    """
    lo, hi = 1, 8
    while _total(count, _first_valid(count, hi, 2 * hi)) < budget:
        if hi >= MAX_D_MODEL:
            return _first_valid_below(count, MAX_D_MODEL + 1)
        lo, hi = hi + 1, 2 * hi
    limit = _first_valid(count, hi, 2 * hi)
    assert limit is not None
    while lo < hi:
        mid = (lo + hi) // 2
        if _total(count, _first_valid(count, mid, limit)) >= budget:
            hi = mid
        else:
            lo = mid + 1
    above = _first_valid(count, hi, limit)
    below = _first_valid_below(count, above) if above is not None else None
    widths = [w for w in (below, above) if w is not None]
    return min(widths, key=lambda w: abs(_total(count, w) - budget)) if widths else None


def _head_options(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The caller's config first; then, if n_heads is free, its default halved down to 1."""
    options = [config]
    if "n_heads" in config_keys(name) and "n_heads" not in config:
        heads = resolve_config(name, **config).get("n_heads", 1)
        while heads > 1:
            heads //= 2
            options.append({**config, "n_heads": heads})
    return options


def size_for_budget(
    name: str, param_budget: int, *, tolerance: float = 0.05, non_embedding: bool = False,
    **config: Any
) -> Sized:
    """Size variant `name` to `param_budget` total parameters by choosing `d_model`
    (non-embedding parameters with `non_embedding`, see :func:`count_params`).

    `config` fixes every other key (vocab_size, n_layers, ...). Raises ValueError naming the
    variant, the budget and the closest achievable count when no width is within `tolerance`.
    """
    if "d_model" in config:
        raise ValueError(f"{name}: d_model is what size_for_budget chooses; do not pass it")
    if param_budget < 1 or tolerance < 0:
        raise ValueError(f"{name}: need param_budget >= 1 and tolerance >= 0")
    closest: tuple[float, dict[str, Any], int, tuple[int, int]] | None = None
    for option in _head_options(name, config):
        count = _counter(name, option, non_embedding)
        width = _closest_width(count, param_budget)
        if width is None:
            continue
        total, active = count(width)  # type: ignore[misc]
        rel = (total - param_budget) / param_budget
        if closest is None or abs(rel) < abs(closest[0]):
            closest = (rel, option, width, (total, active))
        if abs(rel) <= tolerance:
            break
    if closest is None:
        raise ValueError(f"{name}: no d_model up to {MAX_D_MODEL} builds with config {config}")
    rel, option, width, (total, active) = closest
    if abs(rel) > tolerance:
        raise ValueError(
            f"{name}: no d_model gives {param_budget:,} parameters within {tolerance:.0%}; "
            f"closest is {total:,} at d_model={width}"
        )
    resolved = resolve_config(name, **option, d_model=width)
    return Sized(name, resolved, total, active, param_budget, rel)


def size_all(
    names: Sequence[str], budget: int, *, tolerance: float = 0.05, non_embedding: bool = False,
    **config: Any
) -> list[Sized]:
    """`size_for_budget` for each name; keys of `config` a variant does not accept are dropped,
    so shared keys (n_heads, d_state, ...) apply where they mean something."""
    out = []
    for name in names:
        keys = set(config_keys(name))
        own = {k: v for k, v in config.items() if k in keys}
        out.append(size_for_budget(name, budget, tolerance=tolerance,
                                   non_embedding=non_embedding, **own))
    return out
