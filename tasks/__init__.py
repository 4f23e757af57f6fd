"""Task registry: accuracy and efficiency tasks, one file each."""

from __future__ import annotations

from typing import Any

from harness.configs import as_dict, build_config
from harness.registry import Registry
from tasks.base import Metric, MetricSpec, Task

REGISTRY: Registry[Task] = Registry("task")


def register(task: Task) -> Task:
    return REGISTRY.register(task.name, task)


def names() -> list[str]:
    return REGISTRY.names()


def get(name: str) -> Task:
    return REGISTRY.get(name)


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Full config of task ``name`` with defaults filled; bad keys raise ConfigError."""
    task = get(name)
    return as_dict(build_config(task.config_cls, config, name))


def config_keys(name: str) -> list[str]:
    from harness.configs import allowed_keys

    return allowed_keys(get(name).config_cls)


def _import_all() -> None:
    """Each public module of this package is one task that registers itself on import."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

__all__ = ["Metric", "MetricSpec", "Task", "REGISTRY", "register", "names", "get", "resolve_config"]
