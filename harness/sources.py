"""Source digests: a variant's or task's version derived from the code it runs (after asv).

A cell's identity includes the digest of its variant and of its task, so resuming re-runs
exactly the cells whose code changed: editing ``architectures/mamba.py`` re-runs mamba's
cells, a README commit re-runs nothing. The digest covers the modules that define the entry
(its config class and its mixer factory or run function) and every project module they import,
followed transitively through ``import`` statements (found in the source, function bodies
included), with two exclusions:

- the package ``__init__`` of ``architectures`` and ``tasks``, which import every variant or
  task file (following them would make every digest depend on every file);
- for a task, the ``architectures`` package, whose code the variant's digest already covers.

What is hashed is each module's syntax tree without docstrings (``ast.dump``), so editing a
comment, a docstring or the layout changes no digest, while any change to what the code does
changes it. Modules outside the project (torch, numpy...) are not hashed; their versions are
recorded on every row as provenance. A module without a source file (built interactively)
contributes its name only.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PROJECT = ("architectures", "tasks", "harness")
AGGREGATORS = ("architectures", "tasks")  # package __init__s that import every file
DIGEST_CHARS = 12


def _file(module: str) -> Path | None:
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None and spec.has_location else None
    return Path(path) if path and str(path).endswith(".py") else None


def _is_module(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _package_of(module: str, path: Path | None) -> str:
    is_package = path is not None and path.name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


@cache
def imports(module: str) -> tuple[str, ...]:
    """Project modules that ``module``'s source imports (anywhere in the file), sorted."""
    path = _file(module)
    if path is None:
        return ()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ()
    package = _package_of(module, path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # `from tasks.instruments import checkpoints` names a module
                if _is_module(f"{target}.{alias.name}"):
                    found.add(f"{target}.{alias.name}")
    return tuple(sorted(name for name in found if name.split(".")[0] in PROJECT))


def closure(roots: Iterable[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """``roots`` and the project modules they import, transitively, sorted; modules under a
    name in ``exclude`` and the aggregating package ``__init__``s are left out."""

    def skipped(name: str) -> bool:
        return name in AGGREGATORS or any(name == e or name.startswith(e + ".")
                                          for e in exclude)

    seen: set[str] = set()
    todo = [r for r in roots if not skipped(r)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(m for m in imports(name) if m not in seen and not skipped(m))
    return sorted(seen)


@cache
def code_of(module: str) -> str:
    """The module's syntax tree without docstrings, as text ("" without a readable source);
    unparseable source counts as its raw text."""
    path = _file(module)
    if path is None:
        return ""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def digest(roots: Iterable[str], exclude: tuple[str, ...] = ()) -> str:
    """sha256 over the names and code (:func:`code_of`) of :func:`closure`'s modules, first
    12 hex digits."""
    h = hashlib.sha256()
    for name in closure(roots, exclude):
        h.update(name.encode() + b"\0" + code_of(name).encode() + b"\0")
    return h.hexdigest()[:DIGEST_CHARS]


@cache
def _cached(roots: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    return digest(roots, exclude)


def of(*objs: object, exclude: tuple[str, ...] = ()) -> str:
    """Digest of the modules defining ``objs`` (e.g. a variant's config class and mixer
    factory), cached for the process."""
    roots = tuple(sorted({m for m in (getattr(o, "__module__", None) for o in objs) if m}))
    return _cached(roots, exclude)


def clear() -> None:
    """Forget cached digests and imports (after a source file changed in this process)."""
    imports.cache_clear()
    code_of.cache_clear()
    _cached.cache_clear()
