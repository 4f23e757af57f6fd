"""Load user variant/task files given with ``--plugin path.py``."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path


class PluginError(ValueError):
    """A plugin that cannot be loaded; the message is one line."""


def load(path: str) -> None:
    """Import ``path`` so its ``register(...)`` calls run; errors name the file."""
    file = Path(path).resolve()
    if not file.is_file() or file.suffix != ".py":
        raise PluginError(f"{path}: plugin must be an existing .py file")
    name = "archbench_plugin_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # any failure in user code becomes one clear line
        del sys.modules[name]
        raise PluginError(f"{path}: plugin failed to load: {type(err).__name__}: {err}") from None
