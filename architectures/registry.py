"""One registry class for architectures and tasks (after lm-eval's ``api/registry.py``).

A duplicate name is an error; a lookup miss names close matches and every allowed name.

A registry names the package whose modules register its entries. They are imported on the first
lookup, not when the package is imported, so the pure-Python parts below them (config checking,
the measuring instruments, metric records) import without torch: the site and exports read the
database alone, and a timing process starts light.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name that is not registered, or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> entry mapping, filled by importing ``package``'s public modules on first use.

    Every module of ``package`` whose name does not start with ``_`` and is not in ``skip`` (nor
    a subpackage) is one entry's file that calls :meth:`register` when imported, so a new entry
    is one new file. They are imported in sorted order, so registration order is stable.
    """

    def __init__(self, kind: str, package: str | None = None,
                 skip: frozenset[str] = frozenset()) -> None:
        self.kind = kind
        self.package = package
        self.skip = skip
        self._loaded = package is None
        self._entries: dict[str, T] = {}

    def load(self) -> None:
        """Import every entry file of the package (once)."""
        if self._loaded:
            return
        self._loaded = True  # before importing: an entry file may look up another entry
        assert self.package is not None
        path = importlib.import_module(self.package).__path__
        for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if not (info.name.startswith("_") or info.name in self.skip or info.ispkg):
                importlib.import_module(f"{self.package}.{info.name}")

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        self.load()
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; allowed: {', '.join(self.names())}"

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load()
        return len(self._entries)
