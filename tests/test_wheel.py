"""A wheel install carries the site's templates and the database migrations: it upgrades a
schema-1 database and renders the site outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_site_assets_and_renders(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(dist)], check=True,
                   capture_output=True)
    (wheel,) = dist.glob("archbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/site_assets/templates/index.html" in names
    assert "harness/site_assets/static/style.css" in names
    assert "harness/suites/quick.yaml" in names
    assert {"harness/migrations/env.py", "harness/migrations/script.py.mako",
            "harness/migrations/versions/0003_history.py"} <= set(names)
    assert not any(n.startswith("site/") for n in names)  # never a top-level `site` package
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    script = (
        "import harness, harness.render as r, harness.db as d, pathlib, shutil, sys;"
        "assert pathlib.Path(harness.__file__).is_relative_to(pathlib.Path(sys.argv[1]));"
        "assert r.assets_dir() == r.PACKAGE_ASSETS;"
        "shutil.copy(sys.argv[4], sys.argv[2].removeprefix('sqlite:///'));"
        "assert d.upgrade(sys.argv[2]) == (1, d.SCHEMA_VERSION);"  # migrations from the wheel
        "print(r.build(d.connect(sys.argv[2]), pathlib.Path(sys.argv[3])))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(target), f"sqlite:///{tmp_path / 'w.db'}",
         str(tmp_path / "site"), str(ROOT / "tests" / "fixtures" / "schema1.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()
