"""The task contract: a task is a config dataclass plus a ``run`` that returns metrics.

Each task file defines a frozen ``Config`` and registers one :class:`Task`. ``run`` gets the
validated config and a :class:`tasks.instruments.context.CellContext` (device, dtype, seed, a model
factory) and returns :class:`Metric` rows; the harness adds provenance and stores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.instruments.context import CellContext

STATUSES = ("ok", "failed", "oom", "timeout", "killed", "diverged", "unavailable", "unsupported",
            "skipped")


class CellError(RuntimeError):
    """An error that stands for a status other than ``failed`` (the cell records ``status``)."""

    status = "failed"


class Diverged(CellError):
    """Training went non-finite or exploded: the run has no score to report."""

    status = "diverged"


@dataclass(frozen=True)
class Metric:
    """One measured (or unmeasurable) quantity of a cell.

    ``value`` is None exactly when ``status`` is not ``ok``; ``error`` then says why.
    ``spread`` is the IQR of ``samples`` for timed metrics (``spread_kind`` names it).
    """

    name: str
    unit: str
    value: float | None
    higher_is_better: bool | None = None
    status: str = "ok"
    error: str | None = None
    method: str = ""
    n_samples: int = 1
    spread: float | None = None
    spread_kind: str | None = None
    summary: dict[str, Any] | None = None
    samples: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        if self.status == "ok" and (self.value is None or not math.isfinite(self.value)):
            # A NaN or missing reading is never stored as a number.
            object.__setattr__(self, "status", "failed")
            object.__setattr__(self, "error", f"non-finite value {self.value!r}")
            object.__setattr__(self, "value", None)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task declares it reports: name, unit and direction (None: no direction)."""

    name: str
    unit: str
    higher_is_better: bool | None
    doc: str = ""
    # fitted against the task's ``sweep_key`` (scaling exponents, crossovers, scaling plots)
    swept: bool = False
    # its part in a figure combining tasks: "forward_flop_per_token" x "forward_tokens_per_s"
    # at the same shape is the achieved FLOP/s (harness.derive)
    role: str = ""

    def metric(self, value: float | None, **fields: Any) -> Metric:
        """A row of this metric: name, unit and direction from the spec, the rest (method,
        extra, status, ...) as :class:`Metric` takes them."""
        return Metric(name=self.name, unit=self.unit, value=value,
                      higher_is_better=self.higher_is_better, **fields)


@dataclass(frozen=True)
class Task:
    """A registered task: its identity, config schema and measurement."""

    name: str
    kind: str  # "accuracy" | "efficiency"
    version: int
    config_cls: type
    run: Callable[[Any, CellContext], list[Metric]]
    headline: str  # metric shown on the leaderboard index
    doc: str
    needs_causal: bool = True  # bidirectional variants are offered only where False
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the cell process
    metrics: tuple[MetricSpec, ...] = ()  # what ``run`` reports (accuracy tasks declare it)
    # False: shown on the site but never ranked or shaded (``unranked_reason`` says why)
    ranked: bool = True
    unranked_reason: str = ""
    # the machine's matmul peak for this setting (achieved FLOP/s); measured in the cell once
    needs_peak: bool = False
    # the config key a length sweep of this task varies (its ``swept`` metrics are fitted on it)
    sweep_key: str | None = None
