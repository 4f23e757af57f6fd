"""Terminal progress for ``archbench run``: a bar with ETA and one line per finished cell."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from harness.plan import Cell
from harness.runner import Outcome

STYLE = {"ok": "green", "unavailable": "yellow", "unsupported": "yellow"}


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, disable=not self.enabled,
        )
        self.task_id = None

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.bar.__exit__(exc_type, exc, tb)

    def plan(self, total: int, pending: int) -> None:
        self.console.print(Text(f"{total} cells, {total - pending} already done, "
                                f"{pending} to run"))
        self.task_id = self.bar.add_task("cells", total=pending)

    def start(self, cell: Cell) -> None:
        if self.task_id is not None:
            self.bar.update(self.task_id, description=escape(cell.label))

    def done(self, outcome: Outcome) -> None:
        color = STYLE.get(outcome.status, "red")
        first_error = (outcome.error or "").strip().splitlines()[-1:] if outcome.error else []
        why = f" - {first_error[0][:120]}" if first_error and outcome.status != "ok" else ""
        # a cell's text is untrusted: shown as plain text, never parsed as rich markup
        line = Text(f"{outcome.status:<11}", style=color)
        line.append(f" {outcome.cell.label} {outcome.wall_s:6.1f}s{why}")
        self.console.print(line, highlight=False, soft_wrap=True)
        if self.task_id is not None:
            self.bar.advance(self.task_id)
