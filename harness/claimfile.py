"""The claims file (``harness/claims.yaml``): its schema, loading and one-line validation.

What a claim says and how it is evaluated is :mod:`harness.claims`; this module only turns the
YAML into checked :class:`Claim` records, refusing a bad file with one line naming the file,
claim, field and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import yamlsafe

DEFAULT_PATH = Path(__file__).with_name("claims.yaml")
SUITES_DIR = Path(__file__).with_name("suites")

TOP_KEYS = ("claims",)
CLAIM_KEYS = ("id", "claim", "paper", "suite", "task", "metric", "where", "predicate", "notes")
REQUIRED = ("id", "claim", "paper", "suite", "task", "metric", "predicate")
PAPER_KEYS = ("title", "authors", "year", "url")
VALUE_OPS = ("at_least", "at_most")
EXPONENT_OPS = ("exponent_at_least", "exponent_at_most")
OPS = (*VALUE_OPS, "better", *EXPONENT_OPS)
OPTIONS = ("metric", "where", "relative_to_floor")
COMPANIONS = {"at_least": ("arch",), "at_most": ("arch",), "better": ("than", "by"),
              "exponent_at_least": ("arch",), "exponent_at_most": ("arch",)}
REQUIRED_COMPANIONS = {"better": ("than",)}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class ClaimError(ValueError):
    """A claims file this module refuses: one line naming the file, claim, field and what is
    allowed."""


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    paper: dict[str, Any]  # title, authors, year, url
    suite: str
    task: str
    metric: str
    predicate: tuple[dict[str, Any], ...]
    notes: str = ""
    where: dict[str, Any] = field(default_factory=dict)  # task config values every row needs


# --- loading ---------------------------------------------------------------------------------


def shipped_suites() -> list[str]:
    """Names of the suites shipped in ``harness/suites``."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load(path: Path | None = None) -> list[Claim]:
    """Read and check a claims file (default: the shipped ``harness/claims.yaml``).

    Every problem is a :class:`ClaimError` of one line: ``FILE: claim ID: FIELD: problem;
    allowed: ...``. Unknown keys, unknown operators, missing fields, wrong types, duplicate ids
    and suites that are not shipped are refused."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        raw = yamlsafe.load_file(path)
    except (yamlsafe.YamlError, OSError) as err:
        raise ClaimError(f"{path}: {err}") from None
    if not isinstance(raw, dict) or set(raw) - set(TOP_KEYS) or "claims" not in raw:
        raise ClaimError(f"{path}: (top level): must be a mapping with the key 'claims'; "
                         f"allowed: {', '.join(TOP_KEYS)}")
    items = raw["claims"]
    if not isinstance(items, list) or not items:
        raise ClaimError(f"{path}: claims: must be a non-empty list of claims")
    suites = shipped_suites()
    out: list[Claim] = []
    for i, item in enumerate(items):
        claim = _claim(_Where(path, i, item), item, suites)
        if any(c.id == claim.id for c in out):
            raise ClaimError(f"{path}: claim {claim.id}: id: given twice; allowed: each id once")
        out.append(claim)
    return out


@dataclass(frozen=True)
class _Where:
    """Where a problem lies, for its message."""

    path: Path
    index: int
    item: Any

    def err(self, field_: str, problem: str) -> ClaimError:
        name = self.item.get("id") if isinstance(self.item, dict) else None
        label = f"claim {name}" if isinstance(name, str) else f"claims[{self.index}]"
        return ClaimError(f"{self.path}: {label}: {field_}: {problem}")


def _claim(w: _Where, item: Any, suites: list[str]) -> Claim:
    if not isinstance(item, dict):
        raise w.err("(claim)", f"must be a mapping; allowed keys: {', '.join(CLAIM_KEYS)}")
    _keys(w, "(claim)", item, CLAIM_KEYS)
    for key in REQUIRED:
        if key not in item:
            raise w.err(key, f"missing; required: {', '.join(REQUIRED)}")
    claim_id = item["id"]
    if not isinstance(claim_id, str) or not ID_RE.match(claim_id):
        raise w.err("id", f"must be lowercase letters, digits and hyphens (at most 80), got "
                    f"{claim_id!r}")
    suite = _text(w, "suite", item["suite"])
    if suite not in suites:
        raise w.err("suite", f"{suite!r} is not a shipped suite; allowed: {', '.join(suites)}")
    where = _mapping_of_scalars(w, "where", item.get("where", {}))
    predicate = item["predicate"]
    if not isinstance(predicate, list) or not predicate:
        raise w.err("predicate", "must be a non-empty list of comparisons; allowed operators: "
                    f"{', '.join(OPS)}")
    comparisons = tuple(_comparison(w, f"predicate[{j}]", c, bool(where))
                        for j, c in enumerate(predicate))
    return Claim(id=claim_id, claim=_text(w, "claim", item["claim"]),
                 paper=_paper(w, item["paper"]), suite=suite,
                 task=_name(w, "task", item["task"]), metric=_name(w, "metric", item["metric"]),
                 predicate=comparisons, notes=_text(w, "notes", item.get("notes", ""), empty=True),
                 where=where)


def _keys(w: _Where, field_: str, value: dict[str, Any], allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise w.err(f"{field_}.{unknown[0]}" if field_ != "(claim)" else unknown[0],
                    f"unknown key; allowed: {', '.join(allowed)}")


def _text(w: _Where, field_: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise w.err(field_, f"must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return " ".join(value.split())


def _name(w: _Where, field_: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise w.err(field_, f"must be a name (letters, digits, _ . -), got {value!r}")
    return value


def _number(w: _Where, field_: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise w.err(field_, f"must be a finite number, got {value!r}")
    return float(value)


def _mapping_of_scalars(w: _Where, field_: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(
            isinstance(v, (str, int, float, bool)) for v in value.values()):
        raise w.err(field_, "must be a mapping of task config keys to values (strings, "
                    f"numbers, true/false), got {value!r}")
    return dict(value)


def _paper(w: _Where, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise w.err("paper", f"must be a mapping; required keys: {', '.join(PAPER_KEYS)}")
    _keys(w, "paper", value, PAPER_KEYS)
    for key in PAPER_KEYS:
        if key not in value:
            raise w.err(f"paper.{key}", f"missing; required: {', '.join(PAPER_KEYS)}")
    year = value["year"]
    if isinstance(year, bool) or not isinstance(year, int) or not 1900 <= year <= 2100:
        raise w.err("paper.year", f"must be a year (an integer), got {year!r}")
    url = _text(w, "paper.url", value["url"])
    if not url.startswith("https://"):
        raise w.err("paper.url", f"must be an https:// address, got {url!r}")
    return {"title": _text(w, "paper.title", value["title"]),
            "authors": _text(w, "paper.authors", value["authors"]), "year": year, "url": url}


def _comparison(w: _Where, field_: str, value: Any, claim_where: bool) -> dict[str, Any]:
    """One comparison, checked; returned with ``op`` and ``by`` made explicit."""
    if not isinstance(value, dict):
        raise w.err(field_, f"must be a mapping with one operator; allowed: {', '.join(OPS)}")
    ops = [k for k in value if k in OPS]
    if len(ops) != 1:
        raise w.err(field_, f"must have exactly one operator, got {ops or 'none'}; allowed: "
                    f"{', '.join(OPS)}")
    op = ops[0]
    _keys(w, field_, value, (op, *COMPANIONS[op], *OPTIONS))
    out: dict[str, Any] = {"op": op}
    if op == "better":
        out["better"] = _name(w, f"{field_}.better", value["better"])
        if "than" not in value:
            raise w.err(f"{field_}.than", "missing; 'better' needs 'than' (and optionally 'by')")
        out["than"] = _name(w, f"{field_}.than", value["than"])
        out["by"] = _number(w, f"{field_}.by", value.get("by", 0))
    else:
        if "arch" not in value:
            raise w.err(f"{field_}.arch", f"missing; '{op}' needs 'arch'")
        out["arch"] = _name(w, f"{field_}.arch", value["arch"])
        out[op] = _number(w, f"{field_}.{op}", value[op])
    if "metric" in value:
        out["metric"] = _name(w, f"{field_}.metric", value["metric"])
    exponent = op in EXPONENT_OPS
    if exponent and (claim_where or "where" in value or "relative_to_floor" in value):
        option = "where" if claim_where or "where" in value else "relative_to_floor"
        raise w.err(f"{field_}.{option}", "not allowed with an exponent operator (a derived "
                    "figure has no task config or floor); allowed: metric")
    if "where" in value:
        out["where"] = _mapping_of_scalars(w, f"{field_}.where", value["where"])
    if "relative_to_floor" in value:
        if not isinstance(value["relative_to_floor"], bool):
            raise w.err(f"{field_}.relative_to_floor", "must be true or false, got "
                        f"{value['relative_to_floor']!r}")
        out["relative_to_floor"] = value["relative_to_floor"]
    return out
