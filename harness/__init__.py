"""archbench harness: orchestration, measurement, storage, site rendering and CLI."""

from __future__ import annotations

__version__ = "0.1.0"
