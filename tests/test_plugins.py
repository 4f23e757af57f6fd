"""Plugins from outside the repo: ``--plugin FILE.py`` and ``archbench.architectures`` entry points.

Each case runs the CLI in a subprocess, so what a plugin registers never leaks into the
registries other tests see, and the one-line error on stderr is checked as a user sees it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
"""A toy variant: the transformer's mixer under another name."""
from dataclasses import dataclass

import architectures
from architectures.transformer import VARIANT as BASE


@dataclass(frozen=True)
class Config:
    n_heads: int = 4


def make_mixer(cfg, d_model, layer_idx, n_layers):
    return BASE.make_mixer(BASE.config_cls(n_heads=cfg.n_heads), d_model, layer_idx, n_layers)


VARIANT = architectures.register(architectures.Variant(
    name="{name}", family="test double", version=1, papers=(), config_cls=Config,
    make_mixer=make_mixer, doc="Transformer mixer under a plugin name.",
))
'''
DUPLICATE = GOOD.replace("{name}", "transformer")
SYNTAX_ERROR = "def broken(:\n    pass\n"


def archbench(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(p) for p in (pythonpath, ROOT) if p is not None)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def listed(proc: subprocess.CompletedProcess[str]) -> set[str]:
    assert proc.returncode == 0, proc.stderr
    return {entry["name"] for entry in json.loads(proc.stdout)}


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("archbench: error: ")
    return lines[0]


@pytest.mark.parametrize(("body", "cause"), [(SYNTAX_ERROR, "SyntaxError"),
                                             (DUPLICATE, "duplicate name")],
                         ids=["syntax-error", "duplicate"])
def test_bad_plugin_file_is_one_line_naming_file_and_cause(
        tmp_path: Path, body: str, cause: str) -> None:
    path = tmp_path / "bad_plugin.py"
    path.write_text(body)
    line = one_error_line(archbench("--plugin", str(path), "list", "architectures"))
    assert str(path) in line and cause in line


def install_dist(site: Path, module: str, body: str, entry: str) -> None:
    """What pip would leave: the module plus a dist-info folder declaring the entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(body)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(f"""\
            [archbench.architectures]
            {entry}
        """))


def test_entry_point_and_plugin_file_add_variants(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_dist(site, "toy_ep", GOOD.replace("{name}", "toy_ep"), "toy = toy_ep:VARIANT")
    path = tmp_path / "toy_variant.py"
    path.write_text(GOOD.replace("{name}", "toy_file"))
    proc = archbench("--plugin", str(path), "list", "architectures", "--json", pythonpath=site)
    assert {"toy_ep", "toy_file", "transformer"} <= listed(proc)


@pytest.mark.parametrize(("body", "cause"), [("raise ImportError('no torch_extension')\n",
                                              "ImportError: no torch_extension"),
                                             (DUPLICATE, "duplicate name")],
                         ids=["import-error", "duplicate"])
def test_bad_entry_point_is_one_line_naming_it(tmp_path: Path, body: str, cause: str) -> None:
    site = tmp_path / "site"
    install_dist(site, "bad_ep", body, "bad = bad_ep")
    line = one_error_line(archbench("list", "architectures", pythonpath=site))
    assert "entry point bad = bad_ep" in line and cause in line


def test_load_entry_points_without_any_is_a_no_op() -> None:
    from harness import plugins

    assert plugins.load_entry_points(group="archbench.no_such_group") == []


def test_cell_worker_loads_entry_points(tmp_path: Path) -> None:
    """Cells run in fresh processes: the worker loads installed plugins as the CLI does."""
    site = tmp_path / "site"
    install_dist(site, "toy_cell", GOOD.replace("{name}", "toy_cell"), "toy = toy_cell")
    spec = {"arch": "toy_cell", "arch_config": {"d_model": 16, "n_layers": 1}, "seed": 0,
            "task": "flops", "task_config": {"seq_len": 8}, "device": "cpu",
            "dtype": "float32", "threads": 1, "plugins": []}
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    subprocess.run([sys.executable, "-m", "harness.cell", str(spec_path), str(out_path)],
                   cwd=ROOT, env=env, check=True, timeout=120)
    outcome = json.loads(out_path.read_text())
    assert outcome["status"] == "ok", outcome.get("error")


BUILD_SITE = '''
import sys
from pathlib import Path
import architectures
from harness import api, plugins
if sys.argv[3]:
    plugins.load(sys.argv[3])
api.build_site(Path(sys.argv[2]), db_url=sys.argv[1])
print(sorted(architectures.names()) if sys.argv[3] else "", "plugin_site" in sys.modules or
      any(m.startswith("archbench_plugin_") for m in sys.modules))
'''


@pytest.mark.slow
def test_site_of_a_plugin_variant_is_the_same_without_the_plugin_loaded(tmp_path: Path) -> None:
    """A run measures a plugin variant; the site built in a process that loads the plugin and
    in one that never does are byte for byte the same (pages read the database alone)."""
    plugin = tmp_path / "plugin_site.py"
    plugin.write_text(GOOD.replace("{name}", "toy_site"))
    suite = tmp_path / "plugin.yaml"
    suite.write_text(textwrap.dedent("""\
        name: plugin
        hardware: {device: cpu, dtype: float32, threads: 1}
        seeds: [0]
        model: {d_model: 16, n_layers: 1}
        architectures: {toy_site: {}, transformer: {}}
        tasks: {peak_memory: {seq_len: 16}}
        """))
    url = f"sqlite:///{tmp_path / 'plugin.db'}"
    done = archbench("--db", url, "--plugin", str(plugin), "run", "--suite", str(suite),
                     "--no-progress")
    assert done.returncode == 0, done.stderr
    sites = {}
    for name, with_plugin in (("loaded", str(plugin)), ("absent", "")):
        out = subprocess.run([sys.executable, "-c", BUILD_SITE, url, str(tmp_path / name),
                              with_plugin], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        loaded = out.stdout.split()[-1] == "True"
        assert loaded == bool(with_plugin)  # the plugin was loaded in one process only
        root = tmp_path / name
        sites[name] = {str(p.relative_to(root)): p.read_bytes()
                       for p in root.rglob("*") if p.is_file()}
    assert "arch/toy_site.html" in sites["absent"]
    assert b"toy_site" in sites["absent"]["index.html"]
    assert sites["loaded"] == sites["absent"]
