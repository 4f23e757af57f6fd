"""Suite YAML -> validated :class:`Suite`; each error is one line: file, field, allowed values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

import architectures
import tasks
from harness.configs import ConfigError
from harness.registry import RegistryError

SUITES_DIR = Path(__file__).parent / "suites"
TOP_KEYS = ("architectures", "description", "hardware", "model", "name", "seeds", "tasks",
            "timeout_s")
HARDWARE_KEYS = ("device", "dtype", "threads")
# model: keys that size d_model per variant; param_match: which count the budget matches
BUDGET_KEYS = ("param_budget", "param_tolerance", "param_match")
PARAM_MATCHES = ("total", "active")
DTYPES = ("bfloat16", "float16", "float32")
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class SuiteError(ValueError):
    """An invalid suite file; the message is one line."""


@dataclass(frozen=True)
class Hardware:
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 2


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    description: str
    hardware: Hardware
    seeds: tuple[int, ...]
    timeout_s: float
    architectures: dict[str, dict[str, Any]]  # name -> resolved config
    tasks: dict[str, dict[str, Any]]  # name -> resolved config (sweep key at its first value)
    # task name -> (swept key, values in order)
    sweeps: dict[str, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


def shipped() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def find(name_or_path: str) -> Path:
    """A shipped suite by name, or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SuiteError(f"{name_or_path}: no such suite file")
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise SuiteError(
            f"unknown suite {name_or_path!r}; shipped suites: {', '.join(shipped())} "
            "(or pass a path to a .yaml file)"
        )
    return candidate


def _mapping(where: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SuiteError(f"{where} must be a mapping, got {type(value).__name__}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise SuiteError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    return value


def _named(where: str, value: Any) -> dict[str, dict[str, Any]]:
    """Accept ``[a, b]`` or ``{a: {...}, b: null}``."""
    if isinstance(value, list):
        value = {name: {} for name in value}
    out = _mapping(where, value)
    if not out:
        raise SuiteError(f"{where}: must list at least one entry")
    return {str(k): _mapping(f"{where}.{k}", v) for k, v in out.items()}


def _hardware(where: str, raw: Any, overrides: dict[str, Any]) -> Hardware:
    values = {**_mapping(where, raw, HARDWARE_KEYS),
              **{k: v for k, v in overrides.items() if v is not None}}
    hw = Hardware(**values)
    if not isinstance(hw.device, str) or not DEVICE_RE.match(hw.device):
        raise SuiteError(
            f"{where}.device: {hw.device!r} is not a device; allowed: cpu, cuda, cuda:N")
    if hw.dtype not in DTYPES:
        raise SuiteError(f"{where}.dtype: {hw.dtype!r} not allowed; allowed: {', '.join(DTYPES)}")
    if hw.device == "cpu" and hw.dtype == "float16":
        raise SuiteError(
            f"{where}.dtype: float16 has no fast CPU kernels (a few GFLOP/s); "
            "allowed on cpu: bfloat16, float32"
        )
    if not isinstance(hw.threads, int) or isinstance(hw.threads, bool) or hw.threads < 1:
        raise SuiteError(f"{where}.threads: must be an integer >= 1, got {hw.threads!r}")
    return hw


def _sweep(where: str, entry: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
    """Pop ``sweep: {key: [v1, v2, ...]}`` from a task entry: one cell per value, in order."""
    raw = entry.pop("sweep", None)
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SuiteError(f"{where}.sweep: must map exactly one config key to a list of values")
    ((key, values),) = raw.items()
    if not isinstance(values, list) or not values:
        raise SuiteError(f"{where}.sweep.{key}: must be a non-empty list of values")
    if key in entry:
        raise SuiteError(f"{where}.sweep.{key}: is also set outside the sweep; set it once")
    entry[key] = values[0]
    return str(key), tuple(values)


def _shared(name: str, model: dict[str, Any]) -> dict[str, Any]:
    """The suite's shared ``model:`` keys that apply to architecture ``name``: those its
    variant fixes (looped's single shared block) are left out, so a suite-wide ``n_layers``
    never changes a variant's declared structure; a per-variant entry that does is an error."""
    fixed = architectures.fixed_keys(name) if name in architectures.names() else {}
    return {k: v for k, v in model.items() if k not in fixed}


def _resolve(where: str, kind: str, entries: dict[str, dict[str, Any]], module: Any,
             base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, cfg in entries.items():
        try:
            shared = _shared(name, base) if kind == "architecture" else base
            out[name] = module.resolve_config(name, **{**shared, **cfg})
        except RegistryError as err:
            raise SuiteError(f"{where}: {err}") from None
        except ConfigError as err:
            raise SuiteError(f"{where}.{name}: {err}") from None
    return out


def _sized(where: str, budget: dict[str, Any], entries: dict[str, dict[str, Any]],
           model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each architecture's config with the ``d_model`` that brings it to ``param_budget``
    non-embedding parameters (within ``param_tolerance``), everything else as the suite gave
    it. Embedding and output head are left out because each task brings its own vocabulary;
    every row stores the model's full parameter count as well."""
    from architectures.sizing import size_for_budget

    target = budget.get("param_budget")
    tolerance = budget.get("param_tolerance", 0.05)
    match = budget.get("param_match", "total")
    if match not in PARAM_MATCHES:
        raise SuiteError(f"{where}.param_match: must be one of {', '.join(PARAM_MATCHES)}, "
                         f"got {match!r}")
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise SuiteError(f"{where}.param_budget: must be an integer >= 1 (non-embedding "
                         f"parameters), "
                         f"got {target!r}")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not \
            0 < tolerance < 1:
        raise SuiteError(f"{where}.param_tolerance: must be a number in (0, 1), "
                         f"got {tolerance!r}")
    out = {}
    for name, entry in entries.items():
        config = {**_shared(name, model), **entry}
        if "d_model" in config:
            raise SuiteError(f"{where}: d_model and param_budget both set for {name}; "
                             "param_budget chooses d_model, so set one of them")
        keys = set(architectures.config_keys(name))
        try:
            sized = size_for_budget(name, target, tolerance=float(tolerance),
                                    non_embedding=True, match=match,
                                    **{k: v for k, v in config.items() if k in keys})
        except (ValueError, ConfigError) as err:
            raise SuiteError(f"{where}.param_budget: {err}") from None
        out[name] = sized.config
    return out


def load(name_or_path: str, **hardware_overrides: Any) -> Suite:
    """Read, validate and resolve a suite; ``hardware_overrides`` (device, dtype, threads) win."""
    path = find(name_or_path)
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise SuiteError(f"{where}:{line} is not valid YAML") from None
    raw = _mapping(where, raw, TOP_KEYS)
    model = _mapping(f"{where}: model", raw.get("model"))
    budget = {k: model.pop(k) for k in BUDGET_KEYS if k in model}
    arch_entries = _named(f"{where}: architectures", raw.get("architectures"))
    archs = _resolve(f"{where}: architectures", "architecture", arch_entries, architectures,
                     model)
    if budget:
        archs = _sized(f"{where}: model", budget, arch_entries, model)
        model = {**model, **budget}
    task_entries = _named(f"{where}: tasks", raw.get("tasks"))
    sweeps = {name: _sweep(f"{where}: tasks.{name}", entry) for name, entry in task_entries.items()}
    task_cfgs = _resolve(f"{where}: tasks", "task", task_entries, tasks, {})
    for name, (key, values) in {k: v for k, v in sweeps.items() if v}.items():
        for value in values:  # every swept value must be valid, not just the first
            _resolve(f"{where}: tasks", "task", {name: {**task_entries[name], key: value}},
                     tasks, {})
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise SuiteError(f"{where}: seeds: must be a non-empty list of integers >= 0")
    timeout = raw.get("timeout_s", 600)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise SuiteError(f"{where}: timeout_s: must be a number > 0, got {timeout!r}")
    return Suite(
        name=str(raw.get("name", path.stem)), path=where,
        description=str(raw.get("description", "")),
        hardware=_hardware(f"{where}: hardware", raw.get("hardware"), hardware_overrides),
        seeds=tuple(seeds), timeout_s=float(timeout), architectures=archs, tasks=task_cfgs,
        model=model, sweeps={k: v for k, v in sweeps.items() if v},
    )


def with_hardware(suite: Suite, **overrides: Any) -> Suite:
    return replace(suite, hardware=_hardware(suite.path, vars(suite.hardware), overrides))
