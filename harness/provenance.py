"""Code version of the running harness: git commit (with -dirty) or the package version."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@lru_cache(maxsize=1)
def code_version() -> str:
    """``git:<sha12>[-dirty]`` inside a checkout, else ``archbench-<version>``.

    Dirty means tracked source files differ from the commit; ignored data (results/) does not
    count."""
    if (ROOT / ".git").exists():
        sha = _git("rev-parse", "--short=12", "HEAD")
        if sha:
            dirty = _git("status", "--porcelain", "--untracked-files=no")
            return f"git:{sha}{'-dirty' if dirty else ''}"
    return f"archbench-{harness.__version__}"
