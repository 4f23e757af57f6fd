"""Suite YAML -> validated :class:`Suite`; each error is one line: file, field, allowed values."""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import architectures
import tasks
from architectures.configs import ConfigError, show
from architectures.registry import RegistryError
from architectures.sizing import size_for_budget
from harness import yamlsafe

SUITES_DIR = Path(__file__).parent / "suites"
TOP_KEYS = ("architectures", "description", "hardware", "model", "name", "seeds", "tasks",
            "timeout_s")
HARDWARE_KEYS = ("device", "dtype", "threads")
# model: keys that size d_model per variant; param_match: which count the budget matches
BUDGET_KEYS = ("param_budget", "param_tolerance", "param_match")
PARAM_MATCHES = ("total", "active")
DTYPES = ("bfloat16", "float16", "float32")
DEVICE_RE = re.compile(r"cpu|cuda(:\d{1,4})?")  # fullmatch: "cpu\n" is not a device

# Limits, each in the one-line error that enforces it. Names and seeds are stored in columns of
# fixed width (runs.suite String(200); results.arch and .task String(100); .seed Integer).
MAX_NAME = 200  # characters of a suite name
MAX_ENTRY_NAME = 100  # characters of an architecture or task name
MAX_SEED = 2**31 - 1  # seeds are in [0, MAX_SEED]
MAX_SEEDS = 1000  # seeds in one suite
MAX_SWEEP = 1000  # values of one sweep
MAX_CELLS = 100_000  # architectures x task settings x seeds
MAX_TIMEOUT_S = 7 * 24 * 3600  # a week: one cell's wall-clock limit, seconds
MAX_THREADS = 1024
MAX_JOBS = 1024
MAX_PARAM_BUDGET = 10**12  # non-embedding parameters
MAX_MESSAGE = 1000  # characters of one error line
# Architecture ints, beyond the variants' own minimums: any int (widths, state sizes, lengths)
# at most ARCH_MAX_INT; keys that repeat modules at most ARCH_LIMITS (param_budget sizing builds
# every candidate width, and 10^6 layers or experts would not finish building).
ARCH_MAX_INT = 1 << 17
ARCH_LIMITS = {"n_layers": 256, "n_loops": 256, "n_experts": 256}


class SuiteError(ValueError):
    """An invalid suite file; the message is one line of at most MAX_MESSAGE characters (a
    value echoed from the file is cut in the middle, never the file, field or allowed values
    at the ends)."""

    def __init__(self, message: object = "", *args: object) -> None:
        text = " ".join(str(message).splitlines())
        if len(text) > MAX_MESSAGE:
            text = f"{text[:MAX_MESSAGE * 2 // 3]} ... {text[-(MAX_MESSAGE // 3 - 5):]}"
        super().__init__(text, *args)


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


def _is_file(path: Path) -> bool | None:
    """True/False, or None where the name cannot even be asked about (NUL, too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return None


def find(name_or_path: str) -> Path:
    """A shipped suite by name, or a path to a YAML file."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise SuiteError(f"suite {show(name_or_path)}: allowed: a shipped suite name "
                         f"({', '.join(shipped())}) or a path to a .yaml file")
    path = Path(name_or_path)
    try:
        exists = path.exists()
    except (OSError, ValueError):
        exists = False
    if path.suffix in (".yaml", ".yml") or exists:
        if not _is_file(path):
            shown = name_or_path if name_or_path.isprintable() and len(name_or_path) <= 300 \
                else show(name_or_path, 200)
            what = ("is a directory" if path.is_dir() else "is not a regular file") if exists \
                else "no such suite file"
            raise SuiteError(f"{shown}: {what}; allowed: a .yaml file")
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if "/" in name_or_path or "\\" in name_or_path or not _is_file(candidate):
        raise SuiteError(
            f"unknown suite {show(name_or_path)}; shipped suites: {', '.join(shipped())} "
            "(or pass a path to a .yaml file)"
        )
    return candidate


def _err(where: str, field_: str, problem: str) -> SuiteError:
    """``FILE: FIELD: PROBLEM`` as one line (``field_`` empty: the file as a whole)."""
    return SuiteError(f"{where}: {field_}: {problem}" if field_ else f"{where}: {problem}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false",
            int: "an integer", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def _mapping(where: str, field_: str, value: Any, allowed: tuple[str, ...] | None = None,
             what: str = "a mapping") -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(where, field_, f"must be {what}, got {_kind(value)} {show(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise _err(where, field_, f"key {show(bad[0])} is not a string; allowed: string keys")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise _err(where, field_, f"unknown key {show(key)}{hint}; "
                           f"allowed: {', '.join(allowed)}")
    return value


def _int(where: str, field_: str, value: Any, lo: int, hi: int, what: str = "an integer") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _err(where, field_, f"must be {what} in [{lo}, {hi}], got {_kind(value)} "
                   f"{show(value)}")
    return value


def check_timeout(value: Any, where: str = "--timeout") -> float:
    """A per-cell timeout in seconds: a finite number in (0, MAX_TIMEOUT_S]; ``true`` is not 1.
    For the command line's ``--timeout`` (the error names ``where``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)) or not \
            0 < value <= MAX_TIMEOUT_S:
        raise SuiteError(f"{where}: must be a number of seconds in (0, {MAX_TIMEOUT_S}] "
                         f"(at most 7 days), got {show(value)}")
    return float(value)


def check_jobs(value: Any, where: str = "--jobs") -> int:
    """Cells run at once: an integer in [1, MAX_JOBS] (for ``--jobs``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_JOBS:
        raise SuiteError(f"{where}: must be an integer in [1, {MAX_JOBS}], got {show(value)}")
    return value


def check_threads(value: Any, where: str = "--threads") -> int:
    """Threads per cell: an integer in [1, MAX_THREADS] (for ``--threads``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS:
        raise SuiteError(f"{where}: must be an integer in [1, {MAX_THREADS}], "
                         f"got {show(value)}")
    return value


def _name(where: str, field_: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise _err(where, field_, f"must be a non-empty string of at most {limit} printable "
                   f"characters, got {_kind(value)} {show(value)}")
    return value


def _named(where: str, field_: str, value: Any, module: Any) -> dict[str, dict[str, Any]]:
    """Accept ``[a, b]`` or ``{a: {...}, b: null}``; every name registered, each given once."""
    kind = field_.rstrip("s")
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for i, name in enumerate(value):
            if not isinstance(name, str):
                raise _err(where, f"{field_}[{i}]", f"must be {a_kind} name, got {_kind(name)} "
                           f"{show(name)}; allowed: {', '.join(module.names())}")
            if name in out:
                raise _err(where, f"{field_}[{i}]", f"{show(name)} is listed twice; allowed: "
                           "each once")
            out[name] = {}
        value = out
    out = _mapping(where, field_, value, what=f"a list or mapping of {kind} names")
    if not out:
        raise _err(where, field_, f"must list at least one entry; allowed: "
                   f"{', '.join(module.names())}")
    for name in out:
        if len(name) > MAX_ENTRY_NAME:  # the results table cannot store it
            registered = "registered, but " if name in module.names() else ""
            raise _err(where, f"{field_}.{name[:20]}...", f"{kind} {show(name)} is "
                       f"{registered}longer than {MAX_ENTRY_NAME} characters; allowed: "
                       f"{', '.join(n for n in module.names() if len(n) <= MAX_ENTRY_NAME)}")
        if name not in module.names():
            try:
                module.get(name)
            except RegistryError as err:
                raise _err(where, field_, str(err)) from None
    return {k: dict(_mapping(where, f"{field_}.{k}", v)) for k, v in out.items()}


def _hardware(where: str, raw: Any, overrides: dict[str, Any]) -> Hardware:
    """The suite's ``hardware:`` block with command-line overrides on top; an override's
    error names its flag (``--threads``), the file's its field (``FILE: hardware.threads``)."""
    given = _mapping(where, "hardware", raw, HARDWARE_KEYS)
    values: dict[str, tuple[str, str, Any]] = {}  # key -> (where, field, value)
    for key in HARDWARE_KEYS:
        if overrides.get(key) is not None:
            values[key] = ("", f"--{key}", overrides[key])
        elif key in given:
            values[key] = (where, f"hardware.{key}", given[key])
    unknown = set(overrides) - set(HARDWARE_KEYS)
    if unknown:  # a caller's bug, not a user's
        raise TypeError(f"unknown hardware overrides {sorted(unknown)}")

    def err(key: str, problem: str) -> SuiteError:
        w, f, _ = values[key]
        return SuiteError(f"{w}: {f}: {problem}" if w else f"{f}: {problem}")

    hw = Hardware(**{k: v for k, (_, _, v) in values.items()})
    if not isinstance(hw.device, str) or not DEVICE_RE.fullmatch(hw.device):
        raise err("device", f"{show(hw.device)} is not a device; allowed: cpu, cuda, cuda:N")
    if not isinstance(hw.dtype, str) or hw.dtype not in DTYPES:
        raise err("dtype", f"{show(hw.dtype)} not allowed; allowed: {', '.join(DTYPES)}")
    if hw.device == "cpu" and hw.dtype == "float16":
        raise err("dtype", "float16 has no fast CPU kernels (a few GFLOP/s); "
                  "allowed on cpu: bfloat16, float32")
    if isinstance(hw.threads, bool) or not isinstance(hw.threads, int) or \
            not 1 <= hw.threads <= MAX_THREADS:
        raise err("threads", f"must be an integer in [1, {MAX_THREADS}], got "
                  f"{show(hw.threads)}")
    return hw


def _sweep(where: str, field_: str, entry: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
    """Pop ``sweep: {key: [v1, v2, ...]}`` from a task entry: one cell per value, in order."""
    raw = entry.pop("sweep", None)
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _err(where, f"{field_}.sweep", "must map exactly one config key to a list of "
                   f"values, got {_kind(raw)} {show(raw)}")
    ((key, values),) = raw.items()
    at = f"{field_}.sweep.{key}"
    if not isinstance(values, list) or not values or len(values) > MAX_SWEEP:
        raise _err(where, at, f"must be a list of 1 to {MAX_SWEEP} values, got {_kind(values)} "
                   f"{show(values)}")
    if key in entry:
        raise _err(where, at, "is also set outside the sweep; set it once")
    entry[key] = values[0]
    return key, tuple(values)


def _shared(name: str, model: dict[str, Any]) -> dict[str, Any]:
    """The suite's shared ``model:`` keys that apply to architecture ``name``: those its
    variant fixes (looped's single shared block) are left out, so a suite-wide ``n_layers``
    never changes a variant's declared structure; a per-variant entry that does is an error."""
    fixed = architectures.fixed_keys(name) if name in architectures.names() else {}
    return {k: v for k, v in model.items() if k not in fixed}


def _resolve_one(where: str, field_: str, module: Any, name: str,
                 config: dict[str, Any]) -> dict[str, Any]:
    try:
        return module.resolve_config(name, **config)
    except RegistryError as err:
        raise _err(where, field_, str(err)) from None
    except ConfigError as err:
        raise _err(where, field_, str(err)) from None


def _resolve(where: str, kind: str, entries: dict[str, dict[str, Any]], module: Any,
             base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    field_ = "architectures" if kind == "architecture" else "tasks"
    out = {}
    for name, cfg in entries.items():
        shared = _shared(name, base) if kind == "architecture" else base
        try:
            out[name] = _resolve_one(where, f"{field_}.{name}", module, name,
                                     {**shared, **cfg})
        except SuiteError:
            if shared:  # a bad shared key is the model: block's error, not this entry's
                _resolve_one(where, "model", module, name, shared)
            raise
        if kind == "architecture":
            for key, value in {**shared, **cfg}.items():
                limit = ARCH_LIMITS.get(key, ARCH_MAX_INT)
                if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                    at = f"{field_}.{name}.{key}" if key in cfg else f"model.{key}"
                    raise _err(where, at, f"{value:,} is too large; allowed: at most "
                               f"{limit:,}")
    return out


def _sized(where: str, budget: dict[str, Any], entries: dict[str, dict[str, Any]],
           model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each architecture's config with the ``d_model`` that brings it to ``param_budget``
    non-embedding parameters (within ``param_tolerance``), everything else as the suite gave
    it. Embedding and output head are left out because each task brings its own vocabulary;
    every row stores the model's full parameter count as well."""
    target = budget.get("param_budget")
    tolerance = budget.get("param_tolerance", 0.05)
    match = budget.get("param_match", "total")
    if not isinstance(match, str) or match not in PARAM_MATCHES:
        raise _err(where, "model.param_match", f"must be one of {', '.join(PARAM_MATCHES)}, "
                   f"got {show(match)}")
    if isinstance(target, bool) or not isinstance(target, int) or \
            not 1 <= target <= MAX_PARAM_BUDGET:
        raise _err(where, "model.param_budget", f"must be an integer >= 1 (non-embedding "
                   f"parameters, at most {MAX_PARAM_BUDGET:.0e}), got {show(target)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not \
            0 < tolerance < 1:
        raise _err(where, "model.param_tolerance", f"must be a number in (0, 1), "
                   f"got {show(tolerance)}")
    out = {}
    for name, entry in entries.items():
        config = {**_shared(name, model), **entry}
        if "d_model" in config:
            raise _err(where, "model", f"d_model and param_budget both set for {name}; "
                       "param_budget chooses d_model, so set one of them")
        keys = set(architectures.config_keys(name))
        try:
            sized = size_for_budget(name, target, tolerance=float(tolerance),
                                    non_embedding=True, match=match,
                                    **{k: v for k, v in config.items() if k in keys})
        except (ValueError, ConfigError) as err:
            raise _err(where, "model.param_budget", str(err)) from None
        out[name] = sized.config
    return out


def _seeds(where: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_SEEDS:
        raise _err(where, "seeds", f"must be a list of 1 to {MAX_SEEDS} integers in "
                   f"[0, {MAX_SEED}], got {_kind(raw)} {show(raw)}")
    seen: set[int] = set()
    for i, seed in enumerate(raw):
        _int(where, f"seeds[{i}]", seed, 0, MAX_SEED)
        if seed in seen:
            raise _err(where, f"seeds[{i}]", f"{seed} is listed twice (it would be measured "
                       "twice); allowed: each seed once")
        seen.add(seed)
    return tuple(raw)


def _distinct(where: str, field_: str, key: str, values: tuple[Any, ...],
              resolved: list[dict[str, Any]]) -> None:
    """Two sweep values that resolve to one config would be measured twice."""
    seen: dict[str, int] = {}
    for i, cfg in enumerate(resolved):
        mark = repr(cfg.get(key))
        if mark in seen:
            raise _err(where, f"{field_}.sweep.{key}[{i}]", f"{show(values[i])} repeats "
                       f"{show(values[seen[mark]])}; allowed: each value once")
        seen[mark] = i


def load(name_or_path: str, **hardware_overrides: Any) -> Suite:
    """Read, validate and resolve a suite; ``hardware_overrides`` (device, dtype, threads) win.

    Every problem is a SuiteError of one line: the file, the field (dotted path) and what is
    allowed. Nothing else escapes for any file content (see tests/test_suite_fuzz.py)."""
    path = find(name_or_path)
    where = str(path)
    try:
        raw = yamlsafe.load_file(path)
    except yamlsafe.YamlError as err:
        raise SuiteError(f"{where}: {err}") from None
    raw = _mapping(where, "(top level)", raw, TOP_KEYS,
                   what=f"a mapping of {', '.join(TOP_KEYS)}")
    # cheap fields first
    name = _name(where, "name" if "name" in raw else "name (the file name)",
                 raw.get("name", path.stem), MAX_NAME)
    description = raw.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise _err(where, "description", f"must be a string, got {_kind(description)} "
                   f"{show(description)}")
    hardware = _hardware(where, raw.get("hardware"), hardware_overrides)
    seeds = _seeds(where, raw.get("seeds", [0]))
    timeout = check_timeout(raw.get("timeout_s", 600), f"{where}: timeout_s")

    model = dict(_mapping(where, "model", raw.get("model")))
    budget = {k: model.pop(k) for k in BUDGET_KEYS if k in model}
    arch_entries = _named(where, "architectures", raw.get("architectures"), architectures)
    task_entries = _named(where, "tasks", raw.get("tasks"), tasks)
    sweeps = {task: _sweep(where, f"tasks.{task}", entry)
              for task, entry in task_entries.items()}
    settings = sum(len(sw[1]) if sw else 1 for sw in sweeps.values())
    cells = len(arch_entries) * settings * len(seeds)
    if cells > MAX_CELLS:
        raise _err(where, "seeds", f"{len(arch_entries)} architectures x {settings} task "
                   f"settings x {len(seeds)} seeds = {cells:,} cells; allowed: at most "
                   f"{MAX_CELLS:,} (split the suite)")

    archs = _resolve(where, "architecture", arch_entries, architectures, model)
    if budget:
        archs = _sized(where, budget, arch_entries, model)
        model = {**model, **budget}
    task_cfgs = _resolve(where, "task", task_entries, tasks, {})
    for task, sweep in sweeps.items():
        if sweep is None:
            continue
        key, values = sweep
        resolved = [  # every swept value must be valid, not just the first
            _resolve_one(where, f"tasks.{task}.sweep.{key}[{i}]", tasks, task,
                         {**task_entries[task], key: value})
            for i, value in enumerate(values)]
        _distinct(where, f"tasks.{task}", key, values, resolved)
    return Suite(
        name=name, path=where, description=description, hardware=hardware,
        seeds=seeds, timeout_s=timeout, architectures=archs, tasks=task_cfgs,
        model=model, sweeps={k: v for k, v in sweeps.items() if v},
    )


def with_hardware(suite: Suite, **overrides: Any) -> Suite:
    return replace(suite, hardware=_hardware(suite.path, vars(suite.hardware), overrides))


def as_record(suite: Suite) -> dict[str, Any]:
    """The suite as planned, as plain JSON data (stored with each run)."""
    record = asdict(suite)
    record["sweeps"] = {task: {"key": key, "values": list(values)}
                        for task, (key, values) in suite.sweeps.items()}
    return record
