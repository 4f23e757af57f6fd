"""What is registered: architectures, tasks and shipped suites, as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import architectures
import tasks

SUITES_DIR = Path(__file__).parent / "suites"  # what harness.suite ships; no registry needed


def architecture_entry(name: str) -> dict[str, Any]:
    v = architectures.get(name)
    return {"name": name, "family": v.family, "version": v.version, "papers": list(v.papers),
            "causal": getattr(v, "causal", True), "config_keys": architectures.config_keys(name),
            "doc": v.doc.strip()}


def task_entry(name: str) -> dict[str, Any]:
    t = tasks.get(name)
    return {"name": name, "kind": t.kind, "version": t.version, "headline": t.headline,
            "config": tasks.resolve_config(name), "doc": t.doc.strip(), "ranked": t.ranked,
            "unranked_reason": t.unranked_reason, "needs_causal": t.needs_causal,
            "sweep_key": t.sweep_key,
            "metrics": [{"name": m.name, "unit": m.unit, "higher_is_better": m.higher_is_better,
                         "doc": m.doc, "swept": m.swept, "role": m.role} for m in t.metrics]}


def listing(what: str) -> list[dict[str, Any]]:
    if what == "architectures":
        # registered variants, then the hf: model types the installed transformers has
        return [architecture_entry(n) for n in architectures.names(include_hf=True)]
    if what == "tasks":
        return [task_entry(n) for n in tasks.names()]
    return [{"name": p.stem, "path": str(p)} for p in sorted(SUITES_DIR.glob("*.yaml"))]
