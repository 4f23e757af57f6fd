"""`archbench nightly` end to end: real runs of a small suite in subprocesses, one night after
another, against one database.

The variant under watch is a plugin whose mixer sleeps a fixed time in each pass (plus a tiny
transformer mixer), so its prefill latency is a sleep-dominated, quiet quantity: the "second
night 20% slower" is an edit of the plugin file, as a real regression would be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import db, nightly

ROOT = Path(__file__).resolve().parents[1]

SLOW_PLUGIN = '''
"""A transformer mixer that sleeps {sleep_s} s in each parallel pass (a test double)."""
import time
from dataclasses import dataclass

import architectures
from architectures.transformer import VARIANT as BASE

SLEEP_S = {sleep_s}


@dataclass(frozen=True)
class Config:
    n_heads: int = 2


def make_mixer(cfg, d_model, layer_idx, n_layers):
    inner = BASE.make_mixer(BASE.config_cls(n_heads=cfg.n_heads), d_model, layer_idx, n_layers)
    base = type(inner)

    class Sleeper(base):
        def forward(self, x):
            time.sleep(SLEEP_S)
            return base.forward(self, x)

        def prefill(self, x):
            time.sleep(SLEEP_S)
            return base.prefill(self, x)

    inner.__class__ = Sleeper
    return inner


VARIANT = architectures.register(architectures.Variant(
    name="sleeper", family="test double", version=1, papers=(), config_cls=Config,
    make_mixer=make_mixer, doc="Sleeps in each parallel pass.",
))
'''
SLEEP_S = 0.02
SUITE = {"name": "nightly-test", "hardware": {"device": "cpu", "dtype": "float32",
                                              "threads": 1},
         "seeds": [0], "timeout_s": 120, "model": {"d_model": 16, "n_layers": 1},
         "architectures": {"sleeper": {}},
         "tasks": {"prefill_latency": {"seq_len": 16, "n_samples": 20, "warmup": 1,
                                       "min_sample_s": 0.001, "max_total_s": 3.0,
                                       "max_attempts": 1, "processes": 1,
                                       "ci_target": 0.0}}}


def _setup(tmp_path: Path, confirm: bool = True) -> tuple[Path, Path, Path]:
    plugin = tmp_path / "sleeper.py"
    plugin.write_text(SLOW_PLUGIN.format(sleep_s=SLEEP_S))
    suite = tmp_path / "nightly-test.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    config = tmp_path / "nightly.yaml"
    # trust_contended: a sleep is not slowed by other processes, so a measurement taken while
    # other work ran (other tests, a busy CI host) may confirm this double's change.
    # Only latency_ms is watched: a sleep does not scale with the machine's speed as the
    # reference matmul does, so this double's latency_vs_ref moves with the machine's load
    # (by 8-27% between nights while other tests ran), which real, compute-bound variants
    # do not show.
    config.write_text(yaml.safe_dump({
        "suites": [str(suite)], "rerun": "all", "site": "site", "report": "reports",
        "regression": {"alpha": 0.01, "min_effect": 0.05, "noise_k": 3.0, "window": 10,
                       "confirm": confirm, "metrics": ["latency_ms"],
                       "trust_contended": True}}))
    return plugin, suite, config


def _night(tmp_path: Path, plugin: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "harness.cli", "--plugin", str(plugin),
                           "--db", str(tmp_path / "nightly.db"), "nightly", "--config",
                           str(config)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def _reports(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "reports").glob("*.json"))]


@pytest.mark.slow
def test_a_20_percent_slower_night_is_a_confirmed_regression_and_exit_1(tmp_path: Path) -> None:
    plugin, _, config = _setup(tmp_path)
    first = _night(tmp_path, plugin, config)
    assert first.returncode == 0, first.stderr[-3000:]
    plugin.write_text(SLOW_PLUGIN.format(sleep_s=SLEEP_S * 1.2))  # the regression lands
    second = _night(tmp_path, plugin, config)
    assert second.returncode == 1, second.stdout + second.stderr[-3000:]
    assert "regression: sleeper x prefill_latency latency_ms +" in second.stdout
    report = _reports(tmp_path)[-1]
    latency = [c for c in report["changes"] if c["metric"] == "latency_ms"]
    assert len(latency) == 1 and latency[0]["confirmed"] and latency[0]["change"] == "regression"
    assert 0.1 < latency[0]["rel_change"] < 0.35
    assert [r["kind"] for r in report["runs"]] == ["nightly", "confirm"]
    md = sorted((tmp_path / "reports").glob("*.md"))[-1].read_text()
    assert "confirmed regression (exit 1)" in md and "| regression | yes | sleeper |" in md
    assert (tmp_path / "site" / "index.html").is_file()
    engine = db.connect(str(tmp_path / "nightly.db"))
    points = db.change_points(engine, confirmed=True)
    assert {p["metric"] for p in points} >= {"latency_ms"}
    assert [n["exit_code"] for n in db.nightlies(engine)] == [0, 1]
    # the change point is remembered: a third night at the new speed is compared with the
    # nights since the change, so it is clean
    third = _night(tmp_path, plugin, config)
    assert third.returncode == 0, third.stdout + third.stderr[-3000:]
    assert not [c for c in _reports(tmp_path)[-1]["changes"] if c["confirmed"]]


def test_two_unchanged_nights_are_clean(tmp_path: Path) -> None:
    plugin, _, config = _setup(tmp_path)
    for night in range(2):
        proc = _night(tmp_path, plugin, config)
        assert proc.returncode == 0, (night, proc.stdout + proc.stderr[-3000:])
    report = _reports(tmp_path)[-1]
    assert report["exit_code"] == 0 and report["counts"]["series"] >= 1
    assert not [c for c in report["changes"] if c["confirmed"]]
    assert report["counts"].get("none", 0) >= 1  # the latency series was compared


def test_a_second_nightly_on_the_same_database_is_refused(tmp_path: Path) -> None:
    engine = db.connect(str(tmp_path / "locked.db"))
    with nightly.lock(engine):
        with pytest.raises(nightly.NightlyError, match="another `archbench nightly`"):
            with nightly.lock(engine):
                pass
    with nightly.lock(engine):  # released
        pass


@pytest.mark.slow
@pytest.mark.parametrize(("body", "field"), [
    ({"suites": []}, "suites"),
    ({"suites": ["quick"], "rerun": "sometimes"}, "rerun"),
    ({"suites": ["quick"], "colour": "red"}, "colour"),
    ({"suites": ["quick"], "regression": {"alpha": 2}}, "regression.alpha"),
    ({"suites": ["quick"], "regression": {"window": 2.5}}, "regression.window"),
    ({"suites": ["quick"], "regression": {"confirm": "yes"}}, "regression.confirm"),
    ({"suites": ["quick"], "regression": {"metrics": "latency_ms"}}, "regression.metrics"),
    ({"suites": ["quick"], "regression": {"trust_contended": 1}},
     "regression.trust_contended"),
])
def test_bad_config_is_one_line_naming_file_and_field(tmp_path: Path, body: dict,
                                                      field: str) -> None:
    from harness.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(nightly.NightlyError, match=field.replace(".", r"\.")):
        nightly.load_config(path)
    assert main(["--db", str(tmp_path / "x.db"), "nightly", "--config", str(path)]) == 2


def test_the_shipped_example_config_loads() -> None:
    cfg = nightly.load_config(ROOT / "examples" / "nightly" / "nightly.yaml")
    assert cfg.suites == ("quick",) and cfg.rerun == "all" and cfg.regression.confirm


def test_a_contended_measurement_is_marked_on_its_series() -> None:
    """The flag that keeps a contended measurement from confirming a change."""
    row = {"id": 1, "hardware_fingerprint": "fp", "setting_id": "s", "metric": "latency_ms",
           "arch": "a", "task": "prefill_latency", "unit": "ms", "higher_is_better": False,
           "samples": [1.0] * 5, "value": 1.0, "cell_id": "c", "run_id": "r"}
    quiet = nightly._series([{**row, "extra": {"contended": False}}], {})
    busy = nightly._series([{**row, "extra": {"contended": False}},
                            {**row, "id": 2, "extra": {"contended": True}}], {})
    assert not quiet[("fp", "s", "latency_ms")]["contended"]
    assert busy[("fp", "s", "latency_ms")]["contended"]
    assert busy[("fp", "s", "latency_ms")]["values"] == [1.0] * 10
