"""Task registry: accuracy and efficiency tasks, one file each."""

from __future__ import annotations

from typing import Any

from harness.configs import as_dict, build_config
from harness.registry import Registry
from tasks.base import Metric, Task

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


# Registration happens at import, one module per task.
from tasks import decode_latency, energy, mqar, peak_memory, prefill_latency  # noqa: E402,F401

__all__ = ["Metric", "Task", "REGISTRY", "register", "names", "get", "resolve_config"]
