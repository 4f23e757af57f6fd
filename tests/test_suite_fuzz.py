"""Property tests of suite loading: for ANY file content, ``suite.load`` returns a valid Suite
or raises SuiteError with a one-line message naming the file, and nothing else escapes.

Five strategies, 5,200 generated suite files in all, derandomized (the same files on every run,
so CI is deterministic) and without hypothesis' example database:

- random bytes and random text (non-UTF-8, control characters, garbage);
- YAML-looking token soup (brackets, anchors, aliases, tags, merge keys, duplicate keys);
- a valid suite with one to three fields replaced by values of the wrong type or range (NaN,
  infinities, huge ints, bools, strings where lists go, deep nesting, empty things), keys
  dropped or added, and duplicate keys or anchors spliced into the text;
- valid suites with random in-range values, which must load.

A suite that loads must hold only what its fields allow (the invariants in ``_check_valid``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness import suite

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)


N_BYTES, N_TEXT, N_SOUP, N_MUTATED, N_BUDGET, N_VALID = 800, 800, 2000, 5000, 200, 500

BASES: list[dict[str, Any]] = [
    {"name": "fuzz", "description": "a suite", "hardware": {"device": "cpu", "dtype": "float32",
                                                          "threads": 1},
     "seeds": [0, 1], "timeout_s": 120, "model": {"d_model": 32, "n_layers": 1},
     "architectures": ["transformer", "lstm"],
     "tasks": {"mqar": {"steps": 10, "lr_grid": [0.001, 0.01], "seq_len": 12, "n_pairs": 4},
               "lm_eval": {"tasks": ["archbench_copy"], "limit": 2}}},
    {"name": "fuzz-eff", "hardware": {"device": "cuda:0", "dtype": "bfloat16", "threads": 2},
     "seeds": [3], "timeout_s": 30.5, "model": {"d_model": 64, "n_layers": 2},
     "architectures": {"mamba": {"d_state": 8}, "sliding_window": {"window": 16}},
     "tasks": {"prefill_latency": {"n_samples": 5, "warmup": 1, "max_total_s": 2.0,
                                   "sweep": {"seq_len": [8, 16, 32]}},
               "energy": {"min_window_s": 0.5}, "parity": {"n_bits": 8, "running": True}}},
]
BUDGET_BASE: dict[str, Any] = {
    "name": "fuzz-budget", "seeds": [0], "model": {"param_budget": 20_000, "n_layers": 1,
                                                  "param_tolerance": 0.1, "param_match": "total"},
    "architectures": {"transformer": {"n_heads": 2}}, "tasks": {"flip_flop": {"steps": 5}}}

NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 7, 2**31 - 1, 2**31, 2**63, -(2**63), 2**64 - 1, 0.0, -0.0,
    1e-300, 0.5, 1e308, math.nan, math.inf, -math.inf, "", "x", "cpu\n", "archbench_copy",
    "transformer", "n" * 300, "0.001", [], [0], [0, 0], [1.0, "a"], [[]], ["transformer"],
    [math.nan], [None], {}, {"a": 1}, {"seq_len": [8, 8]}, {"": None}, [[[[[[[[1]]]]]]]],
]
DEEP = "[" * 60 + "]" * 60


def _deep(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
nasty = (st.sampled_from(NASTY) | json_like | st.integers(0, 40).map(_deep)).map(copy.deepcopy)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("suite-fuzz")


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a plain dict/list tree, parents before children."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        tree = tree[step]
    return tree


def _check_valid(s: suite.Suite) -> None:
    """What a loaded suite may hold: the limits the loader promises."""
    assert isinstance(s, suite.Suite)
    assert isinstance(s.name, str) and 0 < len(s.name) <= suite.MAX_NAME
    assert isinstance(s.description, str)
    assert s.seeds and len(set(s.seeds)) == len(s.seeds)
    assert all(type(x) is int and 0 <= x <= suite.MAX_SEED for x in s.seeds)
    assert type(s.timeout_s) is float and 0 < s.timeout_s <= suite.MAX_TIMEOUT_S
    assert s.hardware.dtype in suite.DTYPES and suite.DEVICE_RE.fullmatch(s.hardware.device)
    assert type(s.hardware.threads) is int and 1 <= s.hardware.threads <= suite.MAX_THREADS
    assert s.architectures and s.tasks
    for name in [*s.architectures, *s.tasks]:
        assert isinstance(name, str) and len(name) <= suite.MAX_ENTRY_NAME
    for cfg in [*s.architectures.values(), *s.tasks.values()]:
        for key, value in cfg.items():
            for item in value if isinstance(value, list) else [value]:
                assert not isinstance(item, (dict, list)), (key, value)
                if isinstance(item, float):
                    assert math.isfinite(item), (key, value)
                elif isinstance(item, int) and not isinstance(item, bool):
                    assert -(2**31) <= item < 2**31, (key, value)
    for key, values in s.sweeps.values():
        assert values and len({repr(v) for v in values}) == len(values), (key, values)


def _load(path: Path, data: bytes) -> suite.Suite | None:
    """Write ``data`` to ``path`` and load it: a valid Suite, or None after a SuiteError of
    exactly one line that names the file. Any other exception fails the test."""
    path.write_bytes(data)
    try:
        loaded = suite.load(str(path))
    except suite.SuiteError as err:
        message = str(err)
        assert message and len(message.splitlines()) == 1 and "\n" not in message, message
        assert message.startswith(f"{path}: "), message
        assert len(message) < 2000, message[:200]
        event("refused")
        return None
    _check_valid(loaded)
    event("loaded")
    return loaded


def _dump(body: Any) -> bytes:
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True).encode()


@fuzz(N_BYTES)
@given(data=st.binary(max_size=400))
def test_random_bytes_never_traceback(fuzz_dir: Path, data: bytes) -> None:
    _load(fuzz_dir / "bytes.yaml", data)


@fuzz(N_TEXT)
@given(text=st.text(max_size=400))
def test_random_text_never_traceback(fuzz_dir: Path, text: str) -> None:
    _load(fuzz_dir / "text.yaml", text.encode("utf-8"))


TOKENS = [
    "name: ", "seeds: ", "timeout_s: ", "architectures: ", "tasks: ", "model: ", "hardware: ",
    "description: ", "mqar: ", "transformer", "lstm", "d_model: ", "threads: ", "sweep: ",
    "seq_len: ", "lr_grid: ", "[", "]", "{", "}", ", ", ": ", "- ", "\n", "\n  ", "\n    ",
    "&a ", "*a", "&b ", "*b", "<<: ", "? ", "!!set ", "!!python/object:os.system ", "!!binary ",
    "!foo ", "null", "~", "true", "yes", "on", ".nan", ".inf", "-.inf", "1e309", "0x1f",
    "0o17", "1_000", "12:30:00", "2024-01-01", str(2**63), "9" * 30, "-1", "0", "1", "0.5",
    '"x"', "'y'", '"\\u0000"', "|\n  text\n", ">\n  folded\n", "# c", "---\n", "...\n",
    "%YAML 1.1\n",
    "\t", "\u00a0", "\ufeff", "\x85", "\u2028",
]


@fuzz(N_SOUP)
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=40))
def test_yaml_token_soup_never_tracebacks(fuzz_dir: Path, parts: list[str]) -> None:
    _load(fuzz_dir / "soup.yaml", "".join(parts).encode("utf-8"))


MUTATIONS = ("replace", "replace", "replace", "delete", "add_key", "stringify", "wrap")


@fuzz(N_MUTATED)
@given(data=st.data())
def test_mutated_suites_load_or_fail_in_one_line(fuzz_dir: Path, data: st.DataObject) -> None:
    body = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent, last = _parent(body, path), path[-1]
        kind = data.draw(st.sampled_from(MUTATIONS))
        if kind == "replace":
            parent[last] = data.draw(nasty)
        elif kind == "delete":
            del parent[last]
        elif kind == "add_key" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["sweep", "seed", "n_head", "lr", "", "warmup"]))] = \
                data.draw(nasty)
        elif kind == "stringify":  # "a string where a list goes" and friends
            parent[last] = str(parent[last])
        elif kind == "wrap":
            parent[last] = [parent[last]]
    text = _dump(body).decode()
    splice = data.draw(st.sampled_from(["", "", "dup", "anchor", "deep", "nulkey", "tab"]))
    if splice == "dup":  # the same top-level key twice: the last would silently win
        key = data.draw(st.sampled_from(list(body) or ["name"]))
        text += f"{key}: {data.draw(st.sampled_from(['[0]', '1', 'x', 'null']))}\n"
    elif splice == "anchor":
        text = text.replace("name:", "name: &n", 1) + "description: *n\n"
    elif splice == "deep":
        text += f"description: {DEEP}\n"
    elif splice == "nulkey":
        text = text.replace("model:", "model:\n  null: []\nmodel_:", 1)
    elif splice == "tab":
        text = text.replace("  ", "\t", 1)
    _load(fuzz_dir / "mutated.yaml", text.encode("utf-8"))


@fuzz(N_BUDGET)
@given(key=st.sampled_from(["param_budget", "param_tolerance", "param_match", "n_layers"]),
       value=nasty)
def test_mutated_budget_suites_load_or_fail_in_one_line(fuzz_dir: Path, key: str,
                                                        value: Any) -> None:
    body = copy.deepcopy(BUDGET_BASE)
    body["model"][key] = value
    _load(fuzz_dir / "budget.yaml", _dump(body))


@fuzz(N_VALID)
@given(seeds=st.lists(st.integers(0, suite.MAX_SEED), min_size=1, max_size=5, unique=True),
       timeout=st.floats(1e-3, suite.MAX_TIMEOUT_S) | st.integers(1, suite.MAX_TIMEOUT_S),
       threads=st.integers(1, suite.MAX_THREADS),
       name=st.text(st.characters(codec="utf-8", categories=["L", "N", "P"],
                                         include_characters=" "),
                    min_size=1, max_size=suite.MAX_NAME),
       description=st.text(max_size=200),
       lrs=st.lists(st.floats(1e-6, 1.0), max_size=4, unique=True),
       lengths=st.lists(st.integers(1, 4096), min_size=1, max_size=5, unique=True))
def test_valid_suites_load(fuzz_dir: Path, seeds: list[int], timeout: float, threads: int,
                           name: str, description: str, lrs: list[float],
                           lengths: list[int]) -> None:
    body = {"name": name, "description": description,
            "hardware": {"device": "cpu", "dtype": "float32", "threads": threads},
            "seeds": seeds, "timeout_s": timeout, "model": {"d_model": 32, "n_layers": 1},
            "architectures": ["transformer"],
            "tasks": {"mqar": {"lr_grid": lrs, "steps": 5},
                      "peak_memory": {"sweep": {"seq_len": lengths}}}}
    loaded = _load(fuzz_dir / "valid.yaml", _dump(body))
    assert loaded is not None
    assert loaded.seeds == tuple(seeds) and loaded.timeout_s == float(timeout)
    assert loaded.name == name and loaded.description == description
    assert loaded.sweeps["peak_memory"] == ("seq_len", tuple(lengths))


def test_budget_total_is_at_least_five_thousand() -> None:
    assert N_BYTES + N_TEXT + N_SOUP + N_MUTATED + N_BUDGET + N_VALID >= 5000
