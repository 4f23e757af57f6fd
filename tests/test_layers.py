"""The layering, bottom to top: architectures -> tasks -> harness.

A module imports only its own layer and the ones below (``tasks.instruments``, what tasks measure
with, sits below the task files and imports no task). An import inside a function is allowed only
with ``# lazy: <reason>`` on its line, so no import hides a coupling the layering forbids.
Walks every import statement's syntax tree (function bodies included), then checks at run time
that loading each layer's registry leaves the layers above unimported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"architectures": 0, "tasks": 1, "harness": 2}
SOURCES = sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, absolute module, inside a function) of every project import in ``path``."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base] if child.module else [f"{base}.{a.name}" for a in child.names]
            for target in targets:
                if target.split(".")[0] in LAYERS:
                    found.append((child.lineno, target, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def _layer(module: str) -> tuple[int, int]:
    """(layer, sub-layer): the instruments sit below the task files inside ``tasks``."""
    top = module.split(".")[0]
    below = module == "tasks.instruments" or module.startswith("tasks.instruments.")
    return LAYERS[top], 0 if below or top != "tasks" else 1


def test_the_walk_sees_every_layer_and_its_imports() -> None:
    # the checks below cannot pass vacuously: every layer has files with project imports
    assert {p.relative_to(ROOT).parts[0] for p in SOURCES} == set(LAYERS)
    counted = {layer: sum(len(_imports(p)) for p in SOURCES
                          if p.relative_to(ROOT).parts[0] == layer) for layer in LAYERS}
    assert all(n > 10 for n in counted.values()), counted
    # tasks import the instruments at module top (the walk resolves what they name)
    task_imports = {target for p in SOURCES if p.parent == ROOT / "tasks"
                    for _, target, nested in _imports(p) if not nested}
    assert any(t.startswith("tasks.instruments") for t in task_imports), task_imports


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_upward(path: Path) -> None:
    here = _layer(_module(path))
    upward = [f"{path.relative_to(ROOT)}:{line} imports {target}"
              for line, target, _ in _imports(path) if _layer(target) > here]
    assert not upward, upward


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_function_level_imports_give_their_reason(path: Path) -> None:
    lines = path.read_text().splitlines()
    hidden = [f"{path.relative_to(ROOT)}:{line} imports {target}"
              for line, target, in_function in _imports(path)
              if in_function and "# lazy:" not in lines[line - 1]]
    assert not hidden, hidden


def test_an_upward_import_is_caught() -> None:
    bad = ROOT / "architectures" / "_layer_probe_tmp.py"
    bad.write_text("def f():\n    from harness import db\n    return db\n")
    try:
        found = _imports(bad)
        assert found == [(2, "harness", True)]
        assert _layer("harness") > _layer(_module(bad))
    finally:
        bad.unlink()


def test_loading_a_layer_imports_nothing_above_it() -> None:
    code = ("import sys, architectures; architectures.build(architectures.names()[0], "
            "d_model=16, n_layers=1, vocab_size=8); "
            "up = sorted(m for m in sys.modules if m.split('.')[0] in ('tasks', 'harness')); "
            "assert not up, up; import tasks; tasks.names(); "
            "up = sorted(m for m in sys.modules if m.split('.')[0] == 'harness'); "
            "assert not up, up")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
