"""The nightly scheduling examples (examples/nightly/) parse and say what they must.

Parse-level checks only: the YAML files load and carry the required keys; cron expressions
pass a small validator (ranges, steps, lists, names); the systemd units parse with
configparser and, where ``systemd-analyze`` exists, pass ``systemd-analyze verify``. The
nightly.yaml schema is asserted exactly: the nightly implementation is tested against it.
"""

from __future__ import annotations

import configparser
import inspect
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.regress import compare

ROOT = Path(__file__).resolve().parents[1]
NIGHTLY = ROOT / "examples" / "nightly"
SUITES = ROOT / "harness" / "suites"
CONFIG_ARG = "examples/nightly/nightly.yaml"

# ---------------------------------------------------------------------------------------------
# A small 5-field cron validator, a strict subset of Vixie cron that GitHub Actions also takes:
# *, a, a-b, */n, a-b/n, comma lists, and month/day names (no @daily, no a/n, no L or #)

CRON_FIELDS = (  # name, lowest, highest, names
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                      "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def _cron_value(text: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + (1 if lo == 1 else 0)
    if not text.isdigit():
        raise ValueError(f"not a number: {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{value} outside {lo}-{hi}")
    return value


def _cron_item(item: str, lo: int, hi: int, names: tuple[str, ...]) -> None:
    base, slash, step = item.partition("/")
    if slash and (not step.isdigit() or int(step) < 1):
        raise ValueError(f"bad step in {item!r}")
    if base == "*":
        return
    start, dash, end = base.partition("-")
    if not dash and slash:
        raise ValueError(f"a step needs * or a range: {item!r}")
    first = _cron_value(start, lo, hi, names)
    if dash and _cron_value(end, lo, hi, names) < first:
        raise ValueError(f"reversed range {item!r}")


def validate_cron(expr: str) -> list[str]:
    """The 5 fields of a cron expression; ValueError naming the first bad field."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields, got {len(fields)}: {expr!r}")
    for field, (name, lo, hi, names) in zip(fields, CRON_FIELDS, strict=True):
        for item in field.split(","):
            try:
                _cron_item(item, lo, hi, names)
            except ValueError as err:
                raise ValueError(f"{name} field {field!r}: {err}") from None
    return fields


@pytest.mark.parametrize("expr", ["30 2 * * *", "*/15 0-6,22-23 1,15 * mon-fri",
                                  "0 0 1 jan-jun/2 0", "5 4 * * 7", "0 0 * * sun"])
def test_cron_validator_accepts(expr):
    validate_cron(expr)


@pytest.mark.parametrize("expr", ["30 2 * *", "60 2 * * *", "30 24 * * *", "0 0 0 * *",
                                  "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *", "5-1 * * * *",
                                  "a * * * *", "0 0 * * * *", "1,,2 * * * *", "3/5 * * * *"])
def test_cron_validator_rejects(expr):
    with pytest.raises(ValueError):
        validate_cron(expr)


# ---------------------------------------------------------------------------------------------
# nightly.yaml: exactly the schema


def _load(name: str) -> Any:
    return yaml.safe_load((NIGHTLY / name).read_text())


def test_nightly_yaml_has_exactly_the_schema():
    cfg = _load("nightly.yaml")
    assert set(cfg) == {"suites", "rerun", "site", "report", "regression"}  # no db: --db/env
    assert set(cfg["regression"]) == {"alpha", "min_effect", "noise_k", "window", "confirm"}
    assert isinstance(cfg["suites"], list) and cfg["suites"]
    for suite in cfg["suites"]:
        assert isinstance(suite, str)
        assert (SUITES / f"{suite}.yaml").is_file() or (ROOT / suite).is_file(), suite
    assert cfg["rerun"] in ("all", "changed", "none")
    assert isinstance(cfg["site"], str) and cfg["site"]
    assert isinstance(cfg["report"], str) and cfg["report"]
    reg = cfg["regression"]
    assert isinstance(reg["alpha"], float) and 0 < reg["alpha"] < 1
    assert isinstance(reg["min_effect"], float) and reg["min_effect"] >= 0
    assert isinstance(reg["noise_k"], float) and reg["noise_k"] > 0
    assert isinstance(reg["window"], int) and not isinstance(reg["window"], bool)
    assert reg["window"] >= 1
    assert isinstance(reg["confirm"], bool)


def test_nightly_yaml_values_are_the_documented_ones_and_compare_defaults():
    cfg = _load("nightly.yaml")
    assert cfg["suites"] == ["quick"] and cfg["rerun"] == "all"
    assert (cfg["site"], cfg["report"]) == ("site-out", "reports")
    defaults = {name: p.default for name, p in inspect.signature(compare).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    reg = cfg["regression"]
    assert reg == {"alpha": 0.01, "min_effect": 0.05, "noise_k": 3.0, "window": 10,
                   "confirm": True}
    for key in ("alpha", "min_effect", "noise_k", "window"):
        assert reg[key] == defaults[key], key


def test_every_nightly_yaml_key_is_commented():
    lines = (NIGHTLY / "nightly.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        key = re.match(r"^\s*([A-Za-z_]+):", line)
        if key is None:
            continue
        inline = "#" in line.split(":", 1)[1]
        above = i > 0 and lines[i - 1].strip().startswith("#")
        assert inline or above, f"key {key.group(1)!r} (line {i + 1}) has no comment"


# ---------------------------------------------------------------------------------------------
# crontab


def _cron_jobs(text: str) -> list[tuple[list[str], str]]:
    """(5 time fields, command) of each job line; comments, blanks and VAR=value skipped."""
    jobs = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", stripped):
            continue
        parts = stripped.split(None, 5)
        assert len(parts) == 6, f"a job needs 5 time fields and a command: {line!r}"
        jobs.append((validate_cron(" ".join(parts[:5])), parts[5]))
    return jobs


def test_crontab_runs_the_nightly_at_0230():
    text = (NIGHTLY / "crontab").read_text()
    jobs = _cron_jobs(text)
    assert len(jobs) == 1
    fields, command = jobs[0]
    assert fields == ["30", "2", "*", "*", "*"]
    assert re.search(r"\.venv/bin/archbench nightly --config " + re.escape(CONFIG_ARG), command)
    assert re.search(r"^cd \S+ &&", command), "runs from the checkout"
    assert re.search(r">>\s*\S.*\.log 2>&1$", command), "logs to a file"
    assert "%" not in command.replace("\\%", ""), "an unescaped % ends a cron command"
    assert "exit" in text.lower() and all(code in text for code in ("0 clean", "1 ", "2 "))


def test_crontab_installs_with_crontab_T_where_supported(tmp_path):
    crontab = shutil.which("crontab")
    if crontab is None:
        pytest.skip("no crontab on PATH")
    probe = subprocess.run([crontab, "-T", "/dev/null"], capture_output=True, text=True)
    if probe.returncode != 0 and "invalid option" in (probe.stderr + probe.stdout).lower():
        pytest.skip("this crontab has no -T (syntax test) option")
    result = subprocess.run([crontab, "-T", str(NIGHTLY / "crontab")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# systemd


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((NIGHTLY / name).read_text())
    return parser


@pytest.mark.slow
def test_service_is_a_oneshot_running_the_venv_archbench():
    unit = _unit("archbench-nightly.service")
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert unit["Unit"].get("Description")
    svc = unit["Service"]
    assert svc["Type"] == "oneshot"
    assert svc["WorkingDirectory"].startswith("/")
    assert "ARCHBENCH_DB=" in svc["Environment"]
    exe, *args = svc["ExecStart"].split()
    assert exe.startswith("/") and exe.endswith("/.venv/bin/archbench")
    assert args[:3] == ["nightly", "--config", CONFIG_ARG]
    success = svc.get("SuccessExitStatus", "").split()
    assert "1" not in success and "2" not in success, "a regression or error must fail the unit"
    assert unit["Install"].get("WantedBy")


def test_timer_fires_daily_at_0230_and_catches_up():
    unit = _unit("archbench-nightly.timer")
    assert {"Unit", "Timer", "Install"} <= set(unit.sections())
    timer = unit["Timer"]
    assert re.fullmatch(r"\*-\*-\* 0?2:30(:00)?", timer["OnCalendar"]), timer["OnCalendar"]
    assert timer["Persistent"].lower() in ("true", "yes", "1", "on")
    assert timer.get("Unit", "archbench-nightly.service") == "archbench-nightly.service"
    assert unit["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on PATH")
    # verify insists that ExecStart exists: point it at a real binary in a copy
    service = (NIGHTLY / "archbench-nightly.service").read_text()
    service, n = re.subn(r"(?m)^ExecStart=\S+", "ExecStart=/bin/true", service)
    assert n == 1
    (tmp_path / "archbench-nightly.service").write_text(service)
    shutil.copy(NIGHTLY / "archbench-nightly.timer", tmp_path)
    result = subprocess.run(
        [analyze, "verify", "./archbench-nightly.service", "./archbench-nightly.timer"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "archbench-nightly" in line]
    # verify returns 0 for settings it ignores ("Failed to parse ..., ignoring"): fail on those
    assert result.returncode == 0 and not ours, result.stdout + result.stderr
    calendar = subprocess.run([analyze, "calendar", _unit("archbench-nightly.timer")["Timer"][
        "OnCalendar"]], capture_output=True, text=True, timeout=60)
    assert calendar.returncode == 0, calendar.stderr
    assert "Normalized form: *-*-* 02:30:00" in calendar.stdout


# ---------------------------------------------------------------------------------------------
# GitHub Actions


def _workflow() -> dict:
    return _load("github-actions.yml")


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _position(steps: list[dict], pattern: str) -> tuple[int, int]:
    """(step index, offset in its run script) of the first match of ``pattern``."""
    for i, step in enumerate(steps):
        match = re.search(pattern, step.get("run", ""))
        if match:
            return i, match.start()
    raise AssertionError(f"no step runs {pattern!r}")


def test_workflow_is_scheduled_and_dispatchable():
    wf = _workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert isinstance(on, dict) and "workflow_dispatch" in on
    crons = [entry["cron"] for entry in on["schedule"]]
    assert crons
    for cron in crons:
        validate_cron(cron)
    for job in wf["jobs"].values():
        runs_on = job["runs-on"]
        assert "self-hosted" in ([runs_on] if isinstance(runs_on, str) else runs_on)
        assert isinstance(job["steps"], list) and job["steps"]


def test_workflow_pins_torch_before_the_project_and_runs_the_nightly():
    steps = _steps(_workflow())
    torch = _position(steps, r"pip install[^\n]*\btorch==2\.13\.0\b")
    project = _position(steps, r"pip install[^\n]*-e \.(\s|$)")
    assert torch < project, "torch must be installed before the project"
    nightly, _ = _position(steps, r"archbench nightly --config " + re.escape(CONFIG_ARG))
    assert nightly > project[0]
    step = steps[nightly]
    assert not step.get("continue-on-error"), "exit 1/2 must fail the job"
    script = step["run"]
    assert "|| true" not in script
    if "set +e" in script:
        assert re.search(r"(?m)^\s*exit \"?\$", script), "the status must be passed on"


def test_workflow_uploads_report_and_site_even_on_failure():
    cfg = _load("nightly.yaml")
    steps = _steps(_workflow())
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert len(uploads) >= 2
    for step in uploads:
        assert step.get("if") == "always()", step
    paths = " ".join(str(s["with"]["path"]) for s in uploads)
    assert cfg["report"] in paths and cfg["site"] in paths
    nightly, _ = _position(steps, r"archbench nightly")
    assert all(steps.index(s) > nightly for s in uploads)
