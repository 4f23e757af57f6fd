"""Planning: content-hash cell ids are stable and change with what is measured."""

from __future__ import annotations

from dataclasses import replace

from harness import plan, suite


def test_quick_plan_has_every_variant_task_pair() -> None:
    s = suite.load("quick")
    cells = plan.plan(s)
    settings = sum(len(s.sweeps[t][1]) if t in s.sweeps else 1 for t in s.tasks)
    assert s.sweeps  # the demo's Scaling page needs a length sweep
    assert len(cells) == len(s.architectures) * settings * len(s.seeds)
    assert {(c.arch, c.task) for c in cells} == {(a, t) for a in s.architectures for t in s.tasks}
    assert len({c.cell_id for c in cells}) == len(cells)


def test_cell_id_is_stable_and_content_addressed() -> None:
    cells = plan.plan(suite.load("quick"))
    again = plan.plan(suite.load("quick"))
    assert [c.cell_id for c in cells] == [c.cell_id for c in again]
    cell = cells[0]
    assert replace(cell, seed=1).cell_id != cell.cell_id
    assert replace(cell, seed=1).config_hash == cell.config_hash
    assert replace(cell, arch_version=cell.arch_version + 1).cell_id != cell.cell_id
    changed = {**cell.task_config, **{next(iter(cell.task_config)): 12345}}
    assert replace(cell, task_config=changed).cell_id != cell.cell_id
    assert replace(cell, threads=cell.threads + 1).cell_id != cell.cell_id


def test_canonical_hash_ignores_key_order() -> None:
    assert plan.canonical_hash({"a": 1, "b": [1, 2]}) == plan.canonical_hash({"b": [1, 2], "a": 1})
