"""Process helpers shared by the measurement processes and the harness's fork server."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

__all__ = ["die_with_parent"]


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Get ``sig`` when ``parent`` dies; exit at once if it already has (the ``prctl`` only
    covers deaths after it is set, so the parent is checked after)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(137)
