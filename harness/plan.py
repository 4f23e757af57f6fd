"""Suite -> ordered list of content-hashed cells (one architecture x task x seed each)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import architectures
import tasks
from harness.suite import Suite


def canonical_hash(obj: Any, length: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys, no spaces), first ``length`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Cell:
    arch: str
    arch_version: int
    arch_config: dict[str, Any]
    task: str
    task_version: int
    task_config: dict[str, Any]
    seed: int
    device: str
    dtype: str
    threads: int
    sweep_key: str | None = None  # the task config key this cell's series sweeps (not identity)

    def identity(self, with_seed: bool = True) -> dict[str, Any]:
        ident = asdict(self)
        ident.pop("sweep_key")
        if not with_seed:
            ident.pop("seed")
        return ident

    @property
    def series(self) -> str | None:
        """Id shared by the cells of one sweep (identity without the swept value)."""
        if self.sweep_key is None:
            return None
        ident = self.identity()
        ident["task_config"] = {k: v for k, v in self.task_config.items() if k != self.sweep_key}
        return canonical_hash(ident)

    @property
    def sweep_value(self) -> Any:
        return self.task_config[self.sweep_key] if self.sweep_key else None

    @property
    def cell_id(self) -> str:
        """Stable id of what is measured: architecture, task, their configs and versions,
        seed, device, dtype and threads."""
        return canonical_hash(self.identity())

    @property
    def config_hash(self) -> str:
        """Like ``cell_id`` but without the seed, so the seeds of one setting group together."""
        return canonical_hash(self.identity(with_seed=False))

    @property
    def label(self) -> str:
        return f"{self.arch} x {self.task} (seed {self.seed})"


def plan(suite: Suite) -> list[Cell]:
    """Cells ordered task-major, then by swept value, then variant, so variants run back to
    back (interleaved, they see the same machine state); causal-only tasks skip bidirectional
    variants."""
    cells = []
    for task_name, base_cfg in suite.tasks.items():
        task = tasks.get(task_name)
        key, values = suite.sweeps.get(task_name, (None, (None,)))
        for value in values:  # a sweep runs shortest first, so a failure can stop its series
            task_cfg = tasks.resolve_config(task_name, **{**base_cfg, key: value}) if key \
                else base_cfg
            for seed in suite.seeds:
                for arch_name, arch_cfg in suite.architectures.items():
                    variant = architectures.get(arch_name)
                    if task.needs_causal and not getattr(variant, "causal", True):
                        continue
                    cells.append(Cell(
                        arch=arch_name, arch_version=variant.version, arch_config=arch_cfg,
                        task=task_name, task_version=task.version, task_config=task_cfg,
                        seed=seed, device=suite.hardware.device, dtype=suite.hardware.dtype,
                        threads=suite.hardware.threads, sweep_key=key,
                    ))
    return cells
