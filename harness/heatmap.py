"""The capability heat map (``capability.html``): what each variant can learn, per machine.

One section per machine; in it one table with a line per variant and a column per accuracy
board on that machine (``harness.boards``: one machine, task, task config, budget, device,
dtype and threads), so a column never mixes settings. A column's header names the task (a link
to its page), states the board's setting briefly (the main task-config keys, the model size,
and whatever else tells it apart from the other boards of its task on that machine; a link to
the full board on the task page) and the chance and trivial floor its rows recorded, or why
the task is not ranked.

A cell is the board's headline (first column) cell as the boards show it
(``harness.pages.cell``): the figure with its CI, shaded red at the task's floor to green at 1
(``cells.shade``; never for an unranked task), and its marks (not converged, not learned in
range, failed, unavailable, ...) as visible badges explained in the legend below. A variant
with several configurations on one board shows its best-ranked line, saying so; a variant
without a line on a board shows "not run".

Pure function of the boards: no database, no registries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment

from harness import pages
from harness.boards import SWEEP_KEYS
from harness.cells import fmt
from harness.outputs import inside

PAGE = "capability.html"
ALWAYS_SHOWN = ("device", "dtype", "threads")  # stated only where they tell boards apart


def write(env: Environment, out: Path, boards: list[dict[str, Any]]) -> None:
    """Render ``capability.html`` into the site folder ``out``."""
    sections = heat_sections(boards)
    inside(out, PAGE).write_text(env.get_template(PAGE).render(
        root=".", sections=sections, legend=pages.legend(sections)), encoding="utf-8")


def heat_sections(boards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per machine with accuracy boards: its columns (one per board) and its variant lines."""
    accuracy = [b for b in boards if b["kind"] == "accuracy"]
    out = []
    for fp in sorted({b["fingerprint"] for b in accuracy}):
        mine = [b for b in accuracy if b["fingerprint"] == fp]
        columns = [column(b, mine) for b in mine]
        archs = sorted({r["arch"] for b in mine for r in b["rows"]})
        out.append({"fingerprint": fp, "columns": columns,
                    "rows": [line(a, mine) for a in archs]})
    return out


def overview_sections(boards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The index's overview per machine: a column per task (accuracy tasks first, then
    efficiency), each one board of that task (``representative``) with the number of its
    other settings on the machine; a line per variant with its headline cell and rank."""
    out = []
    for fp in sorted({b["fingerprint"] for b in boards}):
        mine = [b for b in boards if b["fingerprint"] == fp]
        tasks = list(dict.fromkeys(b["task"] for b in mine))  # boards come accuracy first
        reps = [representative([b for b in mine if b["task"] == t]) for t in tasks]
        columns = [{**column(b, mine), "others": sum(o["task"] == b["task"] for o in mine) - 1}
                   for b in reps]
        archs = sorted({r["arch"] for b in reps for r in b["rows"]})
        out.append({"fingerprint": fp, "columns": columns,
                    "rows": [line(a, reps) for a in archs]})
    return out


def representative(task_boards: list[dict[str, Any]]) -> dict[str, Any]:
    """The board of a task that shows it best: the most variants, then the longest length,
    then the largest step budget, then the newest run."""
    def score(b: dict[str, Any]) -> tuple:
        cfg = b["task_config"]
        length = max((v for k, v in cfg.items() if k in SWEEP_KEYS and _number(v)), default=0)
        steps = cfg.get("steps") if _number(cfg.get("steps")) else 0
        return (len({r["arch"] for r in b["rows"]}), length, steps, b["last_run"]["date"],
                b["id"])
    return max(task_boards, key=score)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def column(board: dict[str, Any], machine_boards: list[dict[str, Any]]) -> dict[str, Any]:
    """A column's header: the board, its brief setting, headline column and baselines (from
    the rows its headline cells show)."""
    head = board["columns"][0]
    rows = board["head_rows"]
    return {"board": board, "head": head,
            "setting": brief_setting(board, [b for b in machine_boards
                                             if b["task"] == board["task"]]),
            "baselines": baselines(rows)}


def brief_setting(board: dict[str, Any], same_task: list[dict[str, Any]]
                  ) -> list[tuple[str, str]]:
    """The main task-config keys and the model size, then any other key (the rest of the task
    config, device, dtype, threads) whose value differs between the task's boards."""
    items = [(k, v) for k, v in board["setting"]
             if not k.startswith("model ") and k not in ALWAYS_SHOWN]
    items.append(("model", board["budget_text"]))

    def rest(b: dict[str, Any]) -> dict[str, str]:
        return {**dict(b["setting_more"]), **{k: str(b[k]) for k in ALWAYS_SHOWN}}

    mine = rest(board)
    varying = {k for b in same_task for k, v in rest(b).items() if mine.get(k) != v}
    varying |= {k for k in mine if any(k not in rest(b) for b in same_task)}
    return items + [(k, mine[k]) for k in sorted(varying) if k in mine]


def baselines(rows: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Chance and floor recorded by a column's rows: one value each, or their range where the
    seeds recorded different ones (a floor measured on each seed's test items)."""
    extras = [r.get("extra") or {} for r in rows]
    out = []
    for name in ("chance", "floor"):
        values = sorted({float(e[name]) for e in extras
                         if isinstance(e.get(name), (int, float))
                         and not isinstance(e.get(name), bool)})
        if not values:
            continue
        text = fmt(values[0]) if len(values) == 1 else f"{fmt(values[0])}–{fmt(values[-1])}"
        if name == "floor":
            how = sorted({str(e["floor_strategy"]) for e in extras if e.get("floor_strategy")})
            text += f" ({', '.join(how)})" if how else ""
        out.append({"name": name, "text": text})
    return out


def line(arch: str, machine_boards: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant's headline cell on each board; its best-ranked line where it has several
    (the board's rows come best first), "not run" where it has none."""
    cells = []
    for b in machine_boards:
        mine = [r for r in b["rows"] if r["arch"] == arch]
        if not mine:
            cells.append({"cell": pages.cell([], b["columns"][0]), "config": "", "of": 0,
                          "rank": None})
            continue
        cells.append({"cell": mine[0]["cells"][0], "of": len(mine), "rank": mine[0]["rank"],
                      "config": mine[0]["arch_config_text"] if len(mine) > 1 else ""})
    # ``pages.legend`` reads every row's "cells" and their "marks": the marks shown here
    return {"arch": arch, "heat": cells, "cells": [c["cell"] for c in cells]}
