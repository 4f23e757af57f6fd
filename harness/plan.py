"""Suite -> ordered list of content-hashed cells (one architecture x task x seed each)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import architectures
import tasks
from architectures.configs import build_config
from harness import sources
from harness.ids import canonical_hash, setting_of  # noqa: F401 - canonical_hash re-exported
from harness.suite import Suite


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
    arch_digest: str = ""  # digest of the variant's source (harness.sources)
    task_digest: str = ""  # digest of the task's source

    def identity(self, with_seed: bool = True) -> dict[str, Any]:
        ident = asdict(self)
        ident.pop("sweep_key")
        if not with_seed:
            ident.pop("seed")
        return ident

    def setting(self) -> dict[str, Any]:
        """What is measured, whatever the code's version: the identity without versions,
        digests and seed."""
        return setting_of(self.identity(with_seed=False))

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
    def setting_id(self) -> str:
        """Id of the setting across code versions and seeds: the series that history,
        regression detection and ``--rerun none`` follow."""
        return canonical_hash(self.setting())

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
                        arch_digest=sources.of(variant.config_cls, variant.make_mixer,
                                               architectures.LanguageModel),
                        task_digest=sources.of(task.config_cls, task.run,
                                               exclude=("architectures",)),
                    ))
    return cells


def task_config(cell: Cell) -> Any:
    """The cell's task config as its dataclass (the plan stores it as a dict)."""
    return build_config(tasks.get(cell.task).config_cls, cell.task_config, cell.task)


def warnings(cells: list[Cell]) -> list[str]:
    """What a careful reader should know before the cells run, one line each; so far: a
    variant that computes the same function as another at a task's length (a window at least
    as long as every sequence), which would fill the board with duplicate rows."""
    out: dict[str, None] = {}
    for cell in cells:
        length = getattr(task_config(cell), "model_seq_len", None)  # trained tasks declare it
        if length is None:
            continue
        reason = architectures.same_function(cell.arch, cell.arch_config, int(length))
        if reason:
            out[f"{cell.arch} x {cell.task}: {reason}"] = None
    return list(out)


DEFAULT_CELL_S = {"accuracy": 60.0, "efficiency": 10.0}  # guesses when no history exists


def estimate(cells: list[Cell], history: dict[tuple[str, str], list[float]]
             ) -> tuple[float, int]:
    """Seconds the cells may take, and how many estimates came from ``history``: the median
    wall time of earlier results of the same (architecture, task), else of the same task, else
    a fixed guess per task kind. A rough figure, meant for planning only."""
    by_task: dict[str, list[float]] = {}
    for (_, task), walls in history.items():
        by_task.setdefault(task, []).extend(walls)
    total, known = 0.0, 0
    for cell in cells:
        walls = history.get((cell.arch, cell.task)) or by_task.get(cell.task)
        if walls:
            total += sorted(walls)[len(walls) // 2]
            known += 1
        else:
            total += DEFAULT_CELL_S.get(tasks.get(cell.task).kind, 60.0)
    return total, known
