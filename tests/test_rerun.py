"""Identity by content: a README edit re-runs nothing, an edit of one variant's file re-runs
only that variant's cells; ``--rerun none|changed|all``.

The commands run in a copy of the project's packages (so the test may edit their files), with
the real CLI in subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import db, sources
from tests.conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    for name in ("harness", "architectures", "tasks"):
        shutil.copytree(ROOT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "README.md", copy / "README.md")
    return copy


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "--db",
                           str(project / "r.db"), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc


def _todo(project: Path, suite: Path, rerun: str = "changed") -> set[str]:
    out = _cli(project, "plan", "--suite", str(suite), "--rerun", rerun).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith("todo")}


@pytest.mark.slow
def test_readme_edit_reruns_nothing_and_a_variant_edit_only_its_cells(
        project: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "two.yaml", ["transformer", "mamba"],
                        {"peak_memory": {"seq_len": 16}}, model={"d_model": 16, "n_layers": 1})
    assert _todo(project, suite) == {"transformer", "mamba"}
    _cli(project, "run", "--suite", str(suite), "--no-progress")
    assert _todo(project, suite) == set()
    stored = db.catalog(db.connect(str(project / "r.db")))  # what the site will show
    assert set(stored["architectures"]) == {"transformer", "mamba"}
    assert set(stored["tasks"]) == {"peak_memory"} and stored["tasks"]["peak_memory"]["doc"]
    assert stored["architectures"]["mamba"]["papers"] and stored["architectures"]["mamba"]["doc"]
    digests = {r["arch"]: r["arch_digest"] for r in db.results(db.connect(str(project / "r.db")))}
    assert digests["mamba"] == stored["architectures"]["mamba"]["digest"]

    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nAn edit that changes no code.\n")
    assert _todo(project, suite) == set()

    mamba = project / "architectures" / "mamba.py"
    source = mamba.read_text()
    mamba.write_text(source.replace('"""', '"""An edited docstring. ', 1) + "\n# a comment\n")
    assert _todo(project, suite) == set()  # comments and docstrings change no number
    mamba.write_text(source + "\nEDITED = True  # an edit of mamba's code\n")
    assert _todo(project, suite) == {"mamba"}
    assert _todo(project, suite, "none") == set()  # its setting was measured before
    assert _todo(project, suite, "all") == {"transformer", "mamba"}
    out = _cli(project, "run", "--suite", str(suite), "--no-progress").stdout
    assert "2 cells, 1 already done, ok 1" in out
    assert _todo(project, suite) == set()
    versions = db.catalog(db.connect(str(project / "r.db")))["architectures"]["mamba"]
    assert versions["digest"] != digests["mamba"]  # the newest version of mamba is shown

    shared = project / "architectures" / "backbone.py"  # every variant runs on it
    shared.write_text(shared.read_text() + "\nEDITED = True  # an edit of the shared backbone\n")
    assert _todo(project, suite) == {"transformer", "mamba"}


def test_digest_covers_what_a_variant_and_a_task_import() -> None:
    import architectures
    import tasks

    v = architectures.get("mamba")
    modules = sources.closure(sorted({v.config_cls.__module__, v.make_mixer.__module__}))
    assert "architectures.mamba" in modules and "architectures._common" in modules
    assert "architectures.transformer" not in modules and "architectures" not in modules
    t = tasks.get("mqar")
    modules = sources.closure([t.config_cls.__module__, t.run.__module__],
                              exclude=("architectures",))
    assert {"tasks.mqar", "tasks._seqtask"} <= set(modules)
    assert not [m for m in modules if m.startswith("architectures")]
    assert "tasks" not in modules and "tasks.parity" not in modules
    assert sources.of(v.config_cls, v.make_mixer) == sources.of(v.make_mixer, v.config_cls)
    assert len(sources.of(v.config_cls)) == sources.DIGEST_CHARS
