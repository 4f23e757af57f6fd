"""Fair sizing: the residual width that brings each variant to the same parameter budget.

The fairness checklist (LRA; *Never Train from Scratch*) asks for one parameter budget across
variants. `size_for_budget` searches `d_model` for the total (or active) parameter count nearest
the budget, with every other key as the caller and the variant's defaults give it: heads,
layers and state sizes are the variant's declared structure, so the sizer never changes them
on its own (only knobs a variant lists in `free_knobs`, and it reports those). Widths a variant
refuses (heads that do not split the width into even halves, ...) raise ConfigError and are
skipped; where no width is within the tolerance the sizer raises and names the knob to set.
Models are counted on the `meta` device, so no weights are allocated (CPU as a fallback).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._common import ConfigError
from .backbone import build, check_keys, config_keys, fixed_keys, get, resolve_config

__all__ = ["MATCHES", "Sized", "count_params", "size_all", "size_for_budget"]

MAX_D_MODEL = 1 << 14  # widest width searched


MATCHES = ("total", "active")  # which parameter count a budget is matched on


@dataclass(frozen=True)
class Sized:
    """A variant sized to a budget: its resolved config (with the chosen d_model) and counts."""

    name: str
    config: dict[str, Any]
    total_params: int
    active_params: int  # parameters one token passes through (MoE); else equal to total
    budget: int
    rel_error: float  # (matched count - budget) / budget
    matched: str = "total"  # which count was matched to the budget: "total" or "active"
    # free knobs other than d_model the sizer set (only those a variant declares in free_knobs)
    moved: dict[str, Any] = field(default_factory=dict)


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


def _size(count: CountFn, width: int | None, which: int) -> float:
    """The matched count (0: total, 1: active) at `width`; inf where it does not build."""
    counted = None if width is None else count(width)
    return float("inf") if counted is None else counted[which]


def _bracket(count: CountFn, budget: int, which: int) -> list[int]:
    """The accepted widths just below and at-or-above the budget (counts grow with width).

    f(d) = count of the first accepted width >= d is non-decreasing, so doubling brackets the
    first d with f(d) >= budget and bisection finds it; the answer is that width and the
    accepted width just below it (either may be missing).
    """
    lo, hi = 1, 8
    while _size(count, _first_valid(count, hi, 2 * hi), which) < budget:
        if hi >= MAX_D_MODEL:
            widest = _first_valid_below(count, MAX_D_MODEL + 1)
            return [] if widest is None else [widest]
        lo, hi = hi + 1, 2 * hi
    limit = _first_valid(count, hi, 2 * hi)
    assert limit is not None
    while lo < hi:
        mid = (lo + hi) // 2
        if _size(count, _first_valid(count, mid, limit), which) >= budget:
            hi = mid
        else:
            lo = mid + 1
    above = _first_valid(count, hi, limit)
    below = _first_valid_below(count, above) if above is not None else None
    return [w for w in (below, above) if w is not None]


def _options(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The caller's config; then, for each knob besides d_model that the variant declares free
    and the caller left unset, its (integer) default halved down to 1, one knob at a time."""
    options = [config]
    defaults = resolve_config(name)
    for knob in get(name).free_knobs:
        value = defaults.get(knob)
        if knob == "d_model" or knob in config or not isinstance(value, int):
            continue
        while value > 1:
            value //= 2
            options.append({**config, knob: value})
    return options


def _structure_hint(config: dict[str, Any]) -> str:
    """The knob a user can set when no width fits: heads set the width grid, else depth."""
    knob = next((k for k in ("n_heads", "head_dim") if k in config), "n_layers")
    return (f"set {knob} (now {config[knob]}) or another structure key explicitly, or widen "
            "the tolerance")


def size_for_budget(
    name: str, param_budget: int, *, tolerance: float = 0.05, non_embedding: bool = False,
    match: str = "total", **config: Any
) -> Sized:
    """Size variant `name` to `param_budget` parameters by choosing `d_model`.

    `match` says which count meets the budget: "total" or "active" (what one token uses; they
    differ for routed experts); non-embedding counts with `non_embedding` (see
    :func:`count_params`). `config` and the variant's defaults fix every other key: the sizer
    moves only the knobs the variant declares free (`Variant.free_knobs`, d_model by default)
    and reports any it moved besides d_model in `Sized.moved`. Raises ValueError naming the
    variant, the budget, the closest count and width, and the knob to set when no width is
    within `tolerance`.
    """
    if "d_model" in config:
        raise ValueError(f"{name}: d_model is what size_for_budget chooses; do not pass it")
    if param_budget < 1 or tolerance < 0:
        raise ValueError(f"{name}: need param_budget >= 1 and tolerance >= 0")
    if match not in MATCHES:
        raise ValueError(f"{name}: match must be one of {', '.join(MATCHES)}; got {match!r}")
    check_keys(name, config)  # errors no width can fix
    which = MATCHES.index(match)
    best: tuple[float, dict[str, Any], int, tuple[int, int], str] | None = None
    for option in _options(name, config):
        count = _counter(name, option, non_embedding)
        widths = _bracket(count, param_budget, which)
        seen = ", ".join(f"{_size(count, w, which):,.0f} at d_model={w}" for w in widths)
        for width in widths:
            counted = count(width)
            assert counted is not None
            rel = (counted[which] - param_budget) / param_budget
            if best is None or abs(rel) < abs(best[0]):
                best = (rel, option, width, counted, seen)
        if best is not None and abs(best[0]) <= tolerance:
            break
    if best is None:
        raise ValueError(f"{name}: no d_model up to {MAX_D_MODEL} builds with config {config}")
    rel, option, width, (total, active), seen = best
    if abs(rel) > tolerance:
        kind = f"{match} {'non-embedding ' if non_embedding else ''}parameters"
        raise ValueError(
            f"{name}: no d_model gives {param_budget:,} {kind} within {tolerance:.0%} with its "
            f"declared structure; closest is {(total, active)[which]:,} at d_model={width} "
            f"(widths around the budget: {seen}); "
            f"{_structure_hint(resolve_config(name, **option, d_model=width))}"
        )
    resolved = resolve_config(name, **option, d_model=width)
    moved = {k: v for k, v in option.items() if k not in config}
    return Sized(name, resolved, total, active, param_budget, rel, match, moved)


def size_all(
    names: Sequence[str], budget: int, *, tolerance: float = 0.05, non_embedding: bool = False,
    match: str = "total", **config: Any
) -> list[Sized]:
    """`size_for_budget` for each name with one `match` for all; shared keys of `config` that a
    variant does not accept, or that it fixes (looped's n_layers), are dropped, so shared keys
    (n_heads, d_state, n_layers, ...) apply where they mean something."""
    out = []
    for name in names:
        keys = set(config_keys(name)) - set(fixed_keys(name))
        own = {k: v for k, v in config.items() if k in keys}
        out.append(size_for_budget(name, budget, tolerance=tolerance,
                                   non_embedding=non_embedding, match=match, **own))
    return out
