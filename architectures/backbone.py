"""The one backbone every variant shares (after zoology): only the sequence mixer changes.

embedding -> n_layers x [norm -> mixer -> residual, norm -> MLP(GELU) -> residual] -> norm -> head.
Also the config entry points: `config_keys`, `resolve_config` and `build`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from harness.configs import as_dict, build_config

from ._common import REGISTRY, ConfigError, Variant, check_fields, choice, integer
from ._common import unknown_keys_message as _unknown_keys_message

__all__ = [
    "BackboneConfig",
    "LanguageModel",
    "build",
    "config_keys",
    "get",
    "names",
    "resolve_config",
]


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone keys every variant accepts."""

    vocab_size: int = integer(256)  # byte-level by default
    d_model: int = integer(64)  # residual width D
    n_layers: int = integer(2)  # blocks, each one mixer + one MLP
    mlp_ratio: int = integer(4)  # MLP hidden width = mlp_ratio * D
    norm: str = choice("layernorm", ("layernorm", "rmsnorm"))  # pre-norm before mixer and MLP


_BACKBONE_KEYS = frozenset(f.name for f in fields(BackboneConfig))


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return REGISTRY.names()


def get(name: str) -> Variant:
    """The registered variant `name`; a miss raises RegistryError naming close matches."""
    return REGISTRY.get(name)


def config_keys(name: str) -> list[str]:
    """Allowed config keys of `name`: backbone keys plus its mixer keys, sorted."""
    mixer_keys = {f.name for f in fields(get(name).config_cls)}
    if mixer_keys & _BACKBONE_KEYS:  # a variant bug, not a user error
        raise TypeError(
            f"{name}: mixer config redefines backbone keys {sorted(mixer_keys & _BACKBONE_KEYS)}"
        )
    return sorted(_BACKBONE_KEYS | mixer_keys)


def _parse(name: str, config: dict[str, Any]) -> tuple[Variant, BackboneConfig, Any]:
    """Validated (variant, backbone config, mixer config); every error is one prefixed line."""
    variant = get(name)
    allowed = config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: {_unknown_keys_message(unknown, allowed)}")
    backbone_part = {k: v for k, v in config.items() if k in _BACKBONE_KEYS}
    mixer_part = {k: v for k, v in config.items() if k not in _BACKBONE_KEYS}
    # types (and a plugin config's own validate()) first, then declared ranges and choices
    backbone = build_config(BackboneConfig, backbone_part, name)
    mixer = build_config(variant.config_cls, mixer_part, name)
    try:
        check_fields(backbone)
        check_fields(mixer)
        if hasattr(mixer, "check"):
            mixer.check(backbone.d_model)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    return variant, backbone, mixer


def _canonical(backbone: BackboneConfig, mixer: Any) -> dict[str, Any]:
    return dict(sorted({**as_dict(backbone), **as_dict(mixer)}.items()))


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Full config of `name`, every default filled, keys sorted; bad input raises ConfigError."""
    _, backbone, mixer = _parse(name, config)
    return _canonical(backbone, mixer)


def build(name: str, **config: Any) -> LanguageModel:
    """A `LanguageModel` of `name`, initialised from the global torch RNG as the caller seeded."""
    variant, backbone, mixer = _parse(name, config)
    return LanguageModel(variant, backbone, mixer)


def _norm(kind: str, d_model: int) -> nn.Module:
    return nn.LayerNorm(d_model, eps=1e-5) if kind == "layernorm" else nn.RMSNorm(d_model, eps=1e-5)


class MLP(nn.Module):
    """Channel mixer: Linear -> GELU -> Linear, no biases."""

    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model, bias=False)
        self.proj = nn.Linear(ratio * d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(nn.functional.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + mixer(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, mixer: nn.Module, cfg: BackboneConfig) -> None:
        super().__init__()
        self.norm1 = _norm(cfg.norm, cfg.d_model)
        self.mixer = mixer
        self.norm2 = _norm(cfg.norm, cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, state = self.mixer.step(self.norm1(x), state)
        x = x + y
        return x + self.mlp(self.norm2(x)), state


class LanguageModel(nn.Module):
    """Token model of one variant: `forward` over a sequence, `step` one token against a state.

    Backbone weights use GPT-2 init (normal 0.02; MLP output scaled by 1/sqrt(2 n_layers));
    each mixer initialises itself as its paper does.
    """

    def __init__(self, variant: Variant, backbone: BackboneConfig, mixer: Any) -> None:
        super().__init__()
        self.variant = variant.name
        self.config = _canonical(backbone, mixer)
        d, n = backbone.d_model, backbone.n_layers
        self.embed = nn.Embedding(backbone.vocab_size, d)
        self.blocks = nn.ModuleList(
            Block(variant.make_mixer(mixer, d, i, n), backbone) for i in range(n)
        )
        self.norm = _norm(backbone.norm, d)
        self.head = nn.Linear(d, backbone.vocab_size, bias=False)
        # a plugin mixer that does not say what it runs is recorded as plain eager PyTorch
        paths = {getattr(block.mixer, "kernel_path", "eager") for block in self.blocks}
        self.kernel_path = "+".join(sorted(paths))
        self._init_backbone(n)

    def _init_backbone(self, n_layers: int) -> None:
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        for block in self.blocks:
            nn.init.normal_(block.mlp.fc.weight, std=0.02)
            nn.init.normal_(block.mlp.proj.weight, std=0.02 / math.sqrt(2 * n_layers))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens int64 (B, T) -> logits (B, T, V)."""
        x = self.embed(tokens)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (B, T, V)

    def _param(self) -> Tensor:
        return self.embed.weight

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[Any]:
        """Empty per-layer mixer states; device and dtype default to the model's parameters'."""
        device = self._param().device if device is None else device
        dtype = self._param().dtype if dtype is None else dtype
        kw = {"device": device, "dtype": dtype}
        return [block.mixer.init_state(batch_size, **kw) for block in self.blocks]

    def step(self, tokens: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """tokens (B, 1) -> logits (B, 1, V) and the states after them."""
        x = self.embed(tokens)  # (B, 1, D)
        new_state = []
        for block, layer_state in zip(self.blocks, state, strict=True):
            x, layer_state = block.step(x, layer_state)
            new_state.append(layer_state)
        return self.head(self.norm(x)), new_state

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self, seq_len: int) -> int:
        """Elements of decoding state per sequence after `seq_len` tokens, summed over layers."""
        return sum(block.mixer.state_size(seq_len) for block in self.blocks)

    def state_bytes(self, seq_len: int, batch_size: int) -> int:
        """Bytes of decoding state for `batch_size` sequences, in the parameters' dtype."""
        return self.state_size(seq_len) * batch_size * self._param().element_size()
