"""``archbench doctor``: the devices, meters, threads and database here, and why any fail."""

from __future__ import annotations

import os
from typing import Any

from harness import db
from tasks.instruments import energy, hardware, memory


def report(db_url: str | None = None) -> dict[str, list[dict[str, Any]]]:
    import torch

    hw = hardware.fingerprint("cpu")
    out: dict[str, list[dict[str, Any]]] = {
        "hardware": [{"fingerprint": hw.fingerprint, **hw.stable}],
        "devices": hardware.describe_devices(),
        "threads": [{
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        }],
        "meters": energy.probe_meters("cuda" if torch.cuda.is_available() else "cpu"),
    }
    reason = memory.cpu_peak_available()
    out["memory"] = [{"probe": "cpu peak RSS (VmHWM after clear_refs)",
                      "works": reason is None, "why_not": reason}]
    url = db.resolve_url(db_url)
    try:
        n = db.count(db.connect(url))
        out["database"] = [{"url": db.redact(url), "works": True, "results": n}]
    except Exception as err:  # doctor reports, it does not crash
        out["database"] = [{"url": db.redact(url), "works": False, "why_not": str(err)[:200]}]
    return out
