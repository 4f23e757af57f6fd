"""Shared fixtures: temporary databases, tiny suites, and a deliberately broken plugin."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

TINY_TASKS = {
    "prefill_latency": {"seq_len": 32, "n_samples": 5, "warmup": 1, "min_sample_s": 0.001,
                        "max_total_s": 2.0, "max_attempts": 1},
    "peak_memory": {"seq_len": 64},
}

BROKEN_PLUGIN = '''
"""A variant whose mixer raises inside forward: every cell using it must fail softly."""
from dataclasses import dataclass

import architectures
from architectures.transformer import VARIANT as BASE


@dataclass(frozen=True)
class Config:
    n_heads: int = 4


def make_mixer(cfg, d_model, layer_idx, n_layers):
    mixer = BASE.make_mixer(BASE.config_cls(n_heads=cfg.n_heads), d_model, layer_idx, n_layers)

    def explode(*args, **kwargs):
        raise RuntimeError("deliberate failure inside the exploding mixer")

    mixer.forward = explode
    return mixer


architectures.register(architectures.Variant(
    name="exploding", family="test double", version=1, papers=(), config_cls=Config,
    make_mixer=make_mixer, doc="Raises in forward, to test soft failure.",
))
'''


def write_suite(path: Path, archs: list[str], task_cfgs: dict | None = None, **top) -> Path:
    import yaml

    body = {"name": path.stem, "hardware": {"device": "cpu", "dtype": "float32", "threads": 1},
            "seeds": [0], "timeout_s": 120, "model": {"d_model": 32, "n_layers": 1},
            "architectures": {a: {} for a in archs}, "tasks": task_cfgs or TINY_TASKS, **top}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def unregister_plugin(path: Path, architectures: tuple[str, ...] = (),
                      tasks: tuple[str, ...] = ()) -> None:
    """Undo what a plugin file loaded in this process registered (the registries are per
    process), so later tests see only what ships and may load the file again."""
    import sys

    import architectures as arch_registry
    import tasks as task_registry

    for name in architectures:
        arch_registry.REGISTRY._entries.pop(name, None)
    for name in tasks:
        task_registry.REGISTRY._entries.pop(name, None)
    for module in [m for m in sys.modules if m.startswith("archbench_plugin_")]:
        if getattr(sys.modules[module], "__file__", None) == str(path.resolve()):
            del sys.modules[module]


@pytest.fixture
def broken_plugin(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "exploding_variant.py"
    path.write_text(textwrap.dedent(BROKEN_PLUGIN))
    yield path
    unregister_plugin(path, architectures=("exploding",))


def require(env_flag: str, reason: str) -> None:
    """Skip with ``reason``, unless CI demands the component (then fail loudly)."""
    if os.environ.get(env_flag):
        pytest.fail(f"{reason} (required here by {env_flag})")
    pytest.skip(reason)


def shipped_declarations():
    """What the shipped tasks declare for derived figures (``derive.Declared``), read from
    the registry as a run stores it."""
    import tasks as task_registry
    from harness import catalog, derive

    return derive.Declared.from_entries(catalog.task_entry(n) for n in task_registry.names())


def store_shipped_catalog(engine) -> None:
    """Store every shipped task's catalog entry, as a run stores those of its cells: the
    derived figures read what the tasks declared from the database."""
    import tasks as task_registry
    from harness import catalog, db

    db.store_catalog(engine, [], [{**catalog.task_entry(n), "digest": "test"}
                                  for n in task_registry.names()])
