"""Sequence-model architectures for archbench: one shared backbone, one mixer per variant file.

Every public module of this package is one variant that registers itself when the registry is
first used (:class:`architectures.registry.Registry`), so a new variant is one new file and nothing
else to edit; users name variants (`build("mamba", d_state=8)`), never import paths.

This package is the bottom layer: it imports nothing else of the project. Importing it is light
(no torch): the public names below load the backbone, and with it torch, when first used, so the
pure-Python modules beside them (``configs``, ``registry``) serve the layers above without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .configs import ConfigError

_PUBLIC = {
    "._common": ("REGISTRY", "Mixer", "Variant", "register", "state_numel"),
    ".backbone": ("BackboneConfig", "LanguageModel", "build", "config_keys", "fixed_keys", "get",
                  "names", "resolve_config", "same_function"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}


def __getattr__(name: str) -> Any:
    """The backbone's public names, imported on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = ["ConfigError", *sorted(_WHERE)]
