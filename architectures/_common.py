"""Pieces every variant file shares: the registry, the `Variant` entry, config fields and checks.

A variant file defines a mixer class and a frozen config dataclass, then calls `register`.
Fields declared with `integer` or `choice` get their values checked without per-variant code; an
optional `check(self, d_model)` method on the config covers rules that involve the backbone width.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from architectures.configs import ConfigError  # the harness catches this one class
from architectures.registry import Registry

__all__ = [
    "REGISTRY",
    "ConfigError",
    "IMPLS",
    "Mixer",
    "MixerState",
    "Variant",
    "check_fields",
    "choice",
    "integer",
    "register",
    "state_numel",
    "unknown_keys_message",
]


def integer(default: int, *, minimum: int = 1) -> Any:
    """A config field holding an int >= `minimum` (bools are refused)."""
    return field(default=default, metadata={"min": minimum})


def choice(default: str, choices: Sequence[str]) -> Any:
    """A config field holding one of `choices`."""
    return field(default=default, metadata={"choices": tuple(choices)})


IMPLS = ("fast", "reference")  # `impl: str = choice("fast", IMPLS)`; see `Mixer`


def check_fields(cfg: Any) -> None:
    """Raise ConfigError (no variant prefix) for the first value its `integer`/`choice` refuses.

    Fields declared without them (plugin configs) only get the type check of `build_config`.
    """
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if "choices" in f.metadata:
            allowed = f.metadata["choices"]
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(
                    f"config key {f.name!r} must be one of {', '.join(allowed)}; got {value!r}"
                )
        elif "min" in f.metadata:
            lo = f.metadata["min"]
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(
                    f"config key {f.name!r} must be an integer >= {lo}; got {value!r}"
                )


def unknown_keys_message(unknown: Sequence[str], allowed: Sequence[str]) -> str:
    """`unknown config key 'd_stat' (did you mean d_state?); allowed: ...` for one or more keys."""
    hints = sorted({m for key in unknown for m in difflib.get_close_matches(key, allowed, n=2)})
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    plural = "s" if len(unknown) > 1 else ""
    named = ", ".join(repr(k) for k in unknown)
    return f"unknown config key{plural} {named}{hint}; allowed: {', '.join(allowed)}"


MixerState = dict[str, Tensor]


class Mixer(Protocol):
    """The sequence-mixer contract (STYLE rule 2); every variant's mixer module satisfies it.

    Decoding state: `init_state`, `step` and `prefill` use one flat `dict[str, Tensor]` per
    mixer (a `MixerState`), keys naming what each tensor holds ("conv", "ssm", "k", "v", ...),
    every tensor's leading dim the batch. A dict subclass is fine (the attention mixers'
    preallocated `_kv.KVCache`); a mixer without decoding returns `{}`. The backbone keeps a
    list of them, one per block run. `kernel_path` names the concrete kernel that runs
    ("chunked", "sequential", "fft", "direct", ...): results rows record it.

    Fast and reference forms: a variant with a second, plainer implementation of its parallel
    pass (a sequential recurrence, a direct convolution, a full-mask attention) has the config
    key `impl` ("fast", the default, or "reference"), `choice("fast", IMPLS)`; both give the same
    outputs and gradients up to float rounding (tests/test_contract.py checks every one).
    """

    kernel_path: str

    def __call__(self, x: Tensor) -> Tensor: ...  # (B, T, D) -> (B, T, D)

    def init_state(
        self, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> MixerState: ...

    def step(self, x_t: Tensor, state: MixerState) -> tuple[Tensor, MixerState]: ...  # (B, 1, D)

    def prefill(self, x: Tensor) -> tuple[Tensor, MixerState]:
        """x (B, T, D), T >= 1 -> (y, state) in one parallel pass, for decoding after x.

        y equals `self(x)` and `state` equals the state `step` reaches from
        `init_state(B, ...)` after x's T tokens one at a time: the same structure (nesting,
        keys, shapes, dtypes) with every tensor equal up to float rounding, so further `step`
        calls from it give what they give after the T steps. A variant without decoding
        (bidirectional) raises NotImplementedError, as its `step` does. Backbone blocks fall
        back to stepping a mixer that lacks `prefill` (plugins); every registered one has it.
        """
        ...

    def state_size(self, seq_len: int) -> int: ...


MakeMixer = Callable[[Any, int, int, int], nn.Module]


@dataclass(frozen=True)
class Variant:
    """One registered architecture: metadata for the site plus how to build its mixer."""

    name: str
    family: str
    version: int  # bump when the variant's numbers would change
    papers: tuple[str, ...]
    config_cls: type  # frozen dataclass of the mixer keys; optional check(self, d_model)
    make_mixer: MakeMixer  # (cfg, d_model, layer_idx, n_layers) -> mixer module
    doc: str  # one paragraph, shown on the site
    causal: bool = True
    # backbone keys this variant sets by default (e.g. moe: n_experts=4), applied before the
    # user's keys; read-only once built
    backbone_defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # backbone keys that are part of the variant's definition (looped: n_layers=1, one shared
    # block); a user value that differs is a ConfigError citing `fixed_reason`
    backbone_fixed: Mapping[str, Any] = field(default_factory=dict, hash=False)
    fixed_reason: str = ""  # why the keys of backbone_fixed are fixed, for the error message
    # config keys `sizing.size_for_budget` may move to meet a parameter budget; everything
    # else (heads, layers, state sizes) is the variant's declared structure and stays put
    free_knobs: tuple[str, ...] = ("d_model",)

    def __post_init__(self) -> None:
        for attr in ("backbone_defaults", "backbone_fixed"):
            object.__setattr__(self, attr, MappingProxyType(dict(getattr(self, attr))))
        if self.backbone_fixed and not self.fixed_reason:
            raise ValueError(f"{self.name}: backbone_fixed needs a fixed_reason")
        if set(self.backbone_fixed) & set(self.free_knobs):
            raise ValueError(f"{self.name}: a key cannot be both fixed and free")
        if "d_model" not in self.free_knobs:
            raise ValueError(f"{self.name}: free_knobs must include d_model (the sizer's width)")
        for f in fields(self.config_cls):
            if f.default is MISSING:
                raise TypeError(f"{self.name}: config key {f.name!r} needs a default")
        if "\n\n" in self.doc.strip():
            raise ValueError(f"{self.name}: doc must be one paragraph")


REGISTRY = Registry[Variant]("architecture", "architectures",
                              skip=frozenset({"backbone", "configs", "registry", "sizing"}))


def register(variant: Variant) -> Variant:
    """Add `variant` to the registry; its doc is folded to one line (the module docstring)."""
    folded = " ".join(variant.doc.split())
    return REGISTRY.register(variant.name, replace(variant, doc=folded))


def _tensors(state: Any) -> Iterator[Tensor]:
    """The tensors of one mixer state (a dict of tensors) or of a list of them (a model's)."""
    for mixer_state in [state] if isinstance(state, Mapping) else state:
        if not isinstance(mixer_state, Mapping):
            raise TypeError(f"a mixer state is a dict of tensors; got {type(mixer_state)}")
        for key, value in mixer_state.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"mixer state item {key!r} is {type(value)}, not a Tensor")
            yield value


def state_numel(state: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]]) -> int:
    """Elements held per sequence by a decoding state: one mixer's dict of tensors, or the
    backbone's list of them (one per block run).

    Every tensor's leading dim is the batch; the total is divided by it. A preallocated KV cache
    (`architectures._kv.KVCache`) is a dict of its filled views, so only the tokens it holds
    count, not its spare capacity.
    """
    tensors = list(_tensors(state))
    if not tensors:
        return 0
    batch = tensors[0].shape[0]
    if any(t.dim() == 0 or t.shape[0] != batch for t in tensors):
        raise ValueError(
            f"state tensors disagree on the batch dim: {[tuple(t.shape) for t in tensors]}"
        )
    return sum(t.numel() for t in tensors) // batch
