"""Read a small YAML config file with limits: every problem is one :class:`YamlError` line.

What :func:`load_file` refuses, and why (``yaml.safe_load`` accepts all of it):

- a file over ``max_bytes`` (1 MiB by default; a suite is a few KiB), read without reading more;
- bytes that are not UTF-8 (the error names the byte offset), and characters YAML forbids;
- anchors and aliases (``&a``, ``*a``): a few lines of them expand to billions of nodes, and a
  config file has no need for them; so merge keys (``<<``) and explicit tags that build other
  Python types (``!!set``, ``!!omap``, ``!!binary``, ``!!timestamp``) are refused too;
- nesting deeper than ``max_depth`` (no RecursionError however deep the brackets go), and
  more than ``MAX_NODES`` values (each costs Python time to build);
- a key that is not a string (``null:``, ``1:``, ``yes:``) and a key given twice in one mapping.

Values come back as plain ``dict`` (in file order), ``list``, ``str``, ``int``, ``float``,
``bool`` and ``None``. Errors carry the dotted path of the offending node (``where``) where one
exists, so callers can prefix their own file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 32  # nested mappings and lists; a suite needs about 6
MAX_NODES = 100_000  # values, keys and collections; a suite has a few hundred
_TAG = "tag:yaml.org,2002:"
SCALAR_TAGS = {_TAG + t: t for t in ("str", "int", "float", "bool", "null")}
KINDS = {"str": "string", "int": "integer", "float": "number", "bool": "true/false",
         "null": "null"}
MAX_INT = 2**64  # larger integers are refused while reading; every field takes far smaller
SEQ_TAG, MAP_TAG = _TAG + "seq", _TAG + "map"


class YamlError(ValueError):
    """A file this module refuses; ``str(err)`` is one line, ``err.where`` the dotted path."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(" ".join(message.splitlines()))
        self.where = where

    @property
    def message(self) -> str:
        return str(self.args[0])


def _path(parts: list[str]) -> str:
    """``a.b[2].c`` from labels (``[2]`` joins its parent), cut to at most 80 characters."""
    where = ""
    for label in parts:
        where += label if label.startswith("[") or not where else f".{label}"
    return where if len(where) <= 80 else f"{where[:38]}...{where[-38:]}"


def _show(text: str, limit: int = 40) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _PyParser(Reader, Scanner, Parser):
    """PyYAML's pure-Python reader, scanner and parser (events only)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)


try:  # libyaml scans and parses ~8x faster; composing and building stay in Python below
    from yaml.cyaml import CParser as _FastParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _FastParser = _PyParser


class _Checks(Composer, SafeConstructor, Resolver):
    """A composer that refuses anchors, aliases, deep nesting and too many nodes, and knows the
    dotted path of the node it is on; mixed with a parser that only produces events."""

    def _setup(self, max_depth: int) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.max_depth = max_depth
        self.depth = 0
        self.nodes = 0
        self.parts: list[str] = []  # labels of the nodes being composed, root first

    def _where(self) -> str:
        return _path(self.parts) or "(top level)"

    def compose_node(self, parent: Any, index: Any) -> Any:
        # the composer names each child by (parent, index): a mapping value by its key node,
        # a list item by its position, a mapping key by None; the root has no parent
        if isinstance(index, ScalarNode):
            self.parts.append(str(index.value))
        elif isinstance(index, int):
            self.parts.append(f"[{index}]")
        else:
            self.parts.append("" if parent is None else "(key)")
        try:
            return self._compose_checked(parent, index)
        finally:
            self.parts.pop()

    def _compose_checked(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or self.nodes >= MAX_NODES or getattr(
                event, "anchor", None) is not None or self.depth >= self.max_depth:
            at = f"{self._where()}: line {event.start_mark.line + 1}"
        if isinstance(event, AliasEvent):
            raise YamlError(f"{at}: aliases (*{event.anchor}) are not allowed; "
                            "allowed: the value written out", self._where())
        if isinstance(event, (ScalarEvent, SequenceStartEvent, MappingStartEvent)) \
                and event.anchor is not None:
            raise YamlError(f"{at}: anchors (&{event.anchor}) are not allowed; "
                            "allowed: the value written out where it is used", self._where())
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlError(f"{at}: more than {MAX_NODES:,} values; allowed: at most "
                            f"{MAX_NODES:,}", self._where())
        if isinstance(event, (SequenceStartEvent, MappingStartEvent)):
            if self.depth >= self.max_depth:
                raise YamlError(f"{at}: nested deeper than {self.max_depth} levels; "
                                f"allowed: at most {self.max_depth}", self._where())
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        return super().compose_node(parent, index)


class _Loader(_Checks, _FastParser):  # type: ignore[misc, valid-type]
    def __init__(self, stream: str, max_depth: int) -> None:
        _FastParser.__init__(self, stream)
        self._setup(max_depth)


class _PyLoader(_Checks, _PyParser):
    """The pure-Python parser: slower, but it reads nesting one event at a time, so the depth
    check names the field where libyaml (which scans ahead) stops at its own limit."""

    def __init__(self, stream: str, max_depth: int) -> None:
        _PyParser.__init__(self, stream)
        self._setup(max_depth)


def _scalar(loader: _Loader, node: ScalarNode, parts: list[str]) -> Any:
    kind = SCALAR_TAGS.get(node.tag)
    where = _path(parts) or "(top level)"
    if kind is None:
        tag = _show(node.tag.removeprefix(_TAG))
        raise YamlError(f"{where}: line {node.start_mark.line + 1}: a {tag} value "
                        f"({_show(node.value)}) is not allowed; allowed: string, integer, "
                        "number, true/false, null (quote it to make it a string)", where)
    try:
        value = loader.construct_object(node, deep=False)
        if kind == "int" and not -MAX_INT <= value <= MAX_INT:
            raise ValueError  # no field takes it, and repr() of a huge int can fail
        return value
    except (ValueError, OverflowError, yaml.YAMLError):  # e.g. an int of > 4300 digits
        raise YamlError(f"{where}: line {node.start_mark.line + 1}: {KINDS[kind]} "
                        f"{_show(node.value)} is out of range; allowed: within +-2**64 "
                        "(quote it to make it a string)", where) from None


def _build(loader: _Loader, node: Any, parts: list[str]) -> Any:
    """Python value of ``node``; depth is bounded by the composer, so recursion is safe."""
    if isinstance(node, ScalarNode):
        return _scalar(loader, node, parts)
    where = _path(parts) or "(top level)"
    line = f"line {node.start_mark.line + 1}"
    if isinstance(node, SequenceNode):
        if node.tag != SEQ_TAG:
            raise YamlError(f"{where}: {line}: tag {_show(node.tag)} is not allowed on a list",
                            where)
        return [_build(loader, item, [*parts, f"[{i}]"]) for i, item in enumerate(node.value)]
    if isinstance(node, MappingNode):
        if node.tag != MAP_TAG:
            raise YamlError(f"{where}: {line}: tag {_show(node.tag)} is not allowed on a "
                            "mapping", where)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = f"line {key_node.start_mark.line + 1}"
            if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                if isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "merge":
                    raise YamlError(f"{where}: {key_line}: merge keys (<<) are not allowed; "
                                    "write the keys out", where)
                shown = (f"key {_show(key_node.value)} is" if isinstance(key_node, ScalarNode)
                         else "a " + ("list" if isinstance(key_node, SequenceNode)
                                      else "mapping") + " as a key is")
                raise YamlError(f"{where}: {key_line}: {shown} not a string; allowed: "
                                "string keys (quote it: null, true, yes, no, on, off and "
                                "numbers are not strings in YAML)", where)
            key = key_node.value
            if key in out:
                at = _path([*parts, key])
                raise YamlError(f"{at}: {key_line}: key {_show(key)} is given twice in one "
                                "mapping; allowed: each key once", at)
            out[key] = _build(loader, value_node, [*parts, key])
        return out
    raise YamlError(f"{where}: {line}: unsupported YAML node", where)  # pragma: no cover


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one YAML document from ``text`` with the limits above (no size cap here)."""
    try:
        return _loads(_Loader, text, max_depth)
    except YamlError as err:
        if "maximum nesting depth" not in str(err) or _Loader is _PyLoader:
            raise
    return _loads(_PyLoader, text, max_depth)  # the same error, with the field's path


def _loads(cls: type, text: str, max_depth: int) -> Any:
    loader = None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate: only from a caller's str, not a file
        raise YamlError(f"character {text[err.start]!r} at offset {err.start} is not "
                        "allowed in YAML; allowed: printable characters") from None
    try:
        loader = cls(text, max_depth)
        node = loader.get_single_node()
        return None if node is None else _build(loader, node, [])
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f"line {mark.line + 1}" if mark else "somewhere"
        column = f" column {mark.column + 1}" if mark else ""
        problem = " ".join((err.problem or err.context or "a syntax error").split())
        raise YamlError(f"{line} is not valid YAML ({problem} at {line}{column})") from None
    except yaml.reader.ReaderError as err:
        char = chr(err.character) if isinstance(err.character, int) else err.character
        raise YamlError(f"character {char!r} at offset {err.position} is not allowed in "
                        "YAML; allowed: printable characters, tab and newline") from None
    except yaml.YAMLError as err:  # pragma: no cover - every error above is marked
        raise YamlError(f"is not valid YAML ({' '.join(str(err).split())})") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_text(path: Path, *, max_bytes: int = MAX_BYTES) -> str:
    """The file as strict UTF-8 text, at most ``max_bytes`` bytes (one-line YamlError)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except IsADirectoryError:
        raise YamlError("is a directory; allowed: a YAML file") from None
    except OSError as err:
        raise YamlError(f"cannot be read ({err.strerror or type(err).__name__})") from None
    if len(data) > max_bytes:
        raise YamlError(f"is larger than {max_bytes:,} bytes; allowed: at most {max_bytes:,}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlError(f"is not UTF-8 text: byte 0x{data[err.start]:02x} at offset "
                        f"{err.start} ({err.reason}); allowed: UTF-8") from None


def load_file(path: Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """:func:`read_text` then :func:`loads`."""
    return loads(read_text(path, max_bytes=max_bytes), max_depth=max_depth)
