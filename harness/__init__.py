"""archbench harness: orchestration, measurement, storage, site rendering and CLI.

The Python API (:mod:`harness.api`) is available from the package itself:
``harness.run_suite("quick")``, ``harness.build_site("site-out")``... Its names load on first
use (PEP 562), so importing one light module of the harness (the site renderer, an export)
does not import the runner and, with it, every layer below.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

API = ("Planned", "RunSummary", "build_site", "check_claims", "compare_runs", "export_results",
       "load_plugins", "machine_report", "merge_databases", "plan_suite", "run_nightly",
       "run_suite", "upgrade_db")


def __getattr__(name: str) -> Any:
    if name not in API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".api", __name__), name)
    globals()[name] = value
    return value


__all__ = ["__version__", *API]
