"""Sequence-model architectures for archbench: one shared backbone, one mixer per variant file.

Importing the package registers every variant; users name them (`build("mamba", d_state=8)`),
never import paths.
"""

from __future__ import annotations

from . import hybrid, linear_attention, mamba, transformer  # noqa: F401  (each registers itself)
from ._common import REGISTRY, ConfigError, Mixer, Variant, register, state_numel
from .backbone import BackboneConfig, LanguageModel, build, config_keys, get, names, resolve_config

__all__ = [
    "REGISTRY",
    "BackboneConfig",
    "ConfigError",
    "LanguageModel",
    "Mixer",
    "Variant",
    "build",
    "config_keys",
    "get",
    "names",
    "register",
    "resolve_config",
    "state_numel",
]
