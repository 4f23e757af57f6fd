"""User variants and tasks from outside the repository, as one-line-error plugins.

Two ways in: ``--plugin path.py`` (:func:`load`) imports a file, and installed distributions
declare Python entry points in the group ``archbench.architectures`` (:func:`load_entry_points`),
each naming a module (``toy = mypkg.toy``) or an object (``toy = mypkg.toy:VARIANT``); importing
it runs its ``register(...)`` calls, and a named ``Variant`` that is not yet registered is
registered. Any failure, a duplicate name included, is a :class:`PluginError` of one line that
names the file or entry point and the cause.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import architectures
from architectures.registry import RegistryError

GROUP = "archbench.architectures"
_loaded_entry_points: set[tuple[str, str, str]] = set()


class PluginError(ValueError):
    """A plugin that cannot be loaded; the message is one line."""


def _cause(err: BaseException) -> str:
    """``Type: message`` on one line; a duplicate registration says so plainly."""
    text = " ".join(str(err).split())
    if isinstance(err, RegistryError):
        return f"registers a duplicate name: {text}"
    return f"failed to load: {type(err).__name__}: {text}"


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
        raise PluginError(f"{path}: plugin {_cause(err)}") from None


def _register_object(obj: object) -> None:
    """An entry point naming a ``Variant`` registers it unless that very entry already is."""
    if isinstance(obj, architectures.Variant):
        if obj.name not in architectures.REGISTRY or architectures.get(obj.name) is not obj:
            architectures.register(obj)


def load_entry_points(group: str = GROUP) -> list[str]:
    """Load every entry point of ``group`` (sorted by name, each once per process).

    Returns the names loaded now; a failure raises PluginError naming the entry point.
    """
    loaded = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        key = (group, ep.name, ep.value)
        if key in _loaded_entry_points:
            continue
        try:
            _register_object(ep.load())
        except Exception as err:  # any failure in user code becomes one clear line
            raise PluginError(
                f"entry point {ep.name} = {ep.value} (group {group}): plugin {_cause(err)}"
            ) from None
        _loaded_entry_points.add(key)
        loaded.append(ep.name)
    return loaded
