"""Task registry: accuracy and efficiency tasks, one file each.

Every public module of this package is one task that registers itself when the registry is first
used; ``tasks.instruments`` holds what they measure with. Importing the package is light (no
torch), so the instruments serve a timing process and the harness without loading every task.
"""

from __future__ import annotations

from typing import Any

from architectures.configs import allowed_keys, as_dict, build_config
from architectures.registry import Registry
from tasks.base import Metric, MetricSpec, Task

REGISTRY: Registry[Task] = Registry("task", "tasks", skip=frozenset({"base"}))


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
    return allowed_keys(get(name).config_cls)


__all__ = ["Metric", "MetricSpec", "Task", "REGISTRY", "register", "names", "get", "resolve_config"]
