"""Sequence-model architectures for archbench: one shared backbone, one mixer per variant file.

Importing the package registers every variant; users name them (`build("mamba", d_state=8)`),
never import paths.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._common import REGISTRY, ConfigError, Mixer, Variant, register, state_numel
from .backbone import (
    BackboneConfig,
    LanguageModel,
    build,
    config_keys,
    fixed_keys,
    get,
    names,
    resolve_config,
    same_function,
)

# Every public module of this package is one variant that registers itself on import, so a new
# variant is one new file and nothing else to edit. Sorted: registration order is stable.
_NOT_VARIANTS = {"backbone", "sizing"}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name not in _NOT_VARIANTS:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "REGISTRY",
    "BackboneConfig",
    "ConfigError",
    "LanguageModel",
    "Mixer",
    "Variant",
    "build",
    "config_keys",
    "fixed_keys",
    "get",
    "names",
    "register",
    "resolve_config",
    "same_function",
    "state_numel",
]
