"""Suite loading: shipped suites resolve; bad files stop with one line naming file, key, allowed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness import suite
from harness.cli import main
from tests.conftest import TINY_TASKS, write_suite


def test_quick_suite_covers_four_variants_and_five_tasks() -> None:
    s = suite.load("quick")
    assert set(s.architectures) == {"transformer", "linear_attention", "mamba", "hybrid"}
    assert set(s.tasks) == {"mqar", "prefill_latency", "decode_latency", "peak_memory", "energy"}
    assert s.architectures["mamba"]["d_model"] == 64  # suite-wide model keys reach every variant


def test_device_override_wins() -> None:
    s = suite.load("quick", device="cuda:1", dtype="bfloat16")
    assert (s.hardware.device, s.hardware.dtype) == ("cuda:1", "bfloat16")


BAD_CASES = {
    "unknown architecture": (
        {"archs": ["transformer", "mambo"]}, ["architectures", "'mambo'", "mamba", "allowed"]),
    "unknown architecture key": (
        {"archs": ["transformer"], "arch_cfg": {"transformer": {"n_head": 4}}},
        ["architectures.transformer", "'n_head'", "n_heads", "allowed"]),
    "unknown task": (
        {"tasks": {"prefil_latency": {}}}, ["tasks", "'prefil_latency'", "prefill_latency"]),
    "unknown task key": (
        {"tasks": {"prefill_latency": {"seqlen": 8}}},
        ["tasks.prefill_latency", "'seqlen'", "seq_len", "allowed"]),
    "unknown top-level key": ({"top": {"seed": [1]}}, ["'seed'", "seeds", "allowed"]),
    "float16 on cpu": (
        {"top": {"hardware": {"device": "cpu", "dtype": "float16"}}},
        ["hardware.dtype", "float16", "bfloat16, float32"]),
    "bad device": ({"top": {"hardware": {"device": "tpu"}}}, ["hardware.device", "cuda:N"]),
    "param budget with d_model": (
        {"top": {"model": {"param_budget": 50_000, "d_model": 32}}},
        ["model", "d_model and param_budget", "transformer"]),
    "param budget not a count": (
        {"top": {"model": {"param_budget": "big"}}}, ["model.param_budget", "integer >= 1"]),
    "param budget out of reach": (
        {"archs": ["linformer"], "top": {"model": {"param_budget": 1000, "n_layers": 1}}},
        ["model.param_budget", "linformer", "within 5%"]),
    "wrong value type": (
        {"tasks": {"prefill_latency": {"seq_len": "long"}}}, ["tasks.prefill_latency", "seq_len"]),
}


def _bad_suite(tmp_path: Path, archs=("transformer",), arch_cfg=None, tasks=None, top=None) -> Path:
    path = write_suite(tmp_path / "bad.yaml", list(archs), tasks or TINY_TASKS, **(top or {}))
    if arch_cfg:
        import yaml

        body = yaml.safe_load(path.read_text())
        body["architectures"].update(arch_cfg)
        path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_suite_exits_nonzero_with_one_line(case: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    kwargs, needles = BAD_CASES[case]
    path = _bad_suite(tmp_path, **kwargs)
    code = main(["--db", str(tmp_path / "x.db"), "run", "--suite", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err


@pytest.mark.slow
def test_unknown_suite_name_lists_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suite", "quik"]) == 2
    err = capsys.readouterr().err
    assert "quick" in err and len(err.strip().splitlines()) == 1


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\narchitectures: [transformer\n")
    with pytest.raises(suite.SuiteError, match=r"broken.yaml: line \d+ is not valid YAML"):
        suite.load(str(path))


def test_sweep_expands_in_order_and_validates_every_value(tmp_path: Path) -> None:
    from harness import plan

    path = write_suite(tmp_path / "sweep.yaml", ["transformer", "mamba"],
                       {"prefill_latency": {"n_samples": 5, "sweep": {"seq_len": [8, 16, 32]}}})
    cells = plan.plan(suite.load(str(path)))
    assert [(c.task_config["seq_len"], c.arch) for c in cells] == [
        (8, "transformer"), (8, "mamba"), (16, "transformer"), (16, "mamba"),
        (32, "transformer"), (32, "mamba")]
    assert len({c.series for c in cells if c.arch == "mamba"}) == 1
    assert len({c.cell_id for c in cells}) == 6
    bad = write_suite(tmp_path / "badsweep.yaml", ["transformer"],
                      {"prefill_latency": {"sweep": {"seq_len": [8, -1]}}})
    with pytest.raises(suite.SuiteError, match="tasks.prefill_latency"):
        suite.load(str(bad))


def test_shipped_efficiency_suite_sweeps_lengths() -> None:
    s = suite.load("efficiency")
    assert s.sweeps["prefill_latency"][0] == "seq_len"
    assert 16384 in s.sweeps["prefill_latency"][1]
    assert s.sweeps["decode_latency"] == ("context_len", (512, 2048, 8192))


def test_efficiency_suite_covers_every_shipped_variant() -> None:
    from tests.test_sizing import shipped_variants

    assert set(suite.load("efficiency").architectures) == shipped_variants()


def test_param_budget_sizes_every_variant_to_the_same_count(tmp_path: Path) -> None:
    from architectures.sizing import count_params

    path = _bad_suite(tmp_path, archs=("transformer", "mamba", "lstm", "moe"),
                      top={"model": {"param_budget": 60_000, "n_layers": 1,
                                     "param_tolerance": 0.05}})
    s = suite.load(str(path))
    widths = {name: cfg["d_model"] for name, cfg in s.architectures.items()}
    assert len(set(widths.values())) > 1  # the budget, not one width, is what they share
    for name, cfg in s.architectures.items():
        total, _ = count_params(name, non_embedding=True, **cfg)
        assert abs(total - 60_000) <= 0.05 * 60_000, (name, total)
        # embeddings are left out: the budget holds at any task's vocabulary
        small, _ = count_params(name, non_embedding=True, **{**cfg, "vocab_size": 17})
        assert small == total
        assert cfg["n_layers"] == 1
    assert s.model["param_budget"] == 60_000


def test_capability_suites_cover_every_causal_variant_and_accuracy_task() -> None:
    import architectures
    import tasks
    from tests.test_sizing import shipped_variants

    causal = {n for n in shipped_variants() if architectures.get(n).causal}
    accuracy = {n for n in tasks.names() if tasks.get(n).kind == "accuracy"
                and tasks.get(n).run.__module__.startswith("tasks.")}  # not test plugins
    for name in ("capability", "capability-full"):
        s = suite.load(name)
        assert set(s.architectures) == causal, name
        assert set(s.tasks) == accuracy, name
        assert s.model["param_budget"] > 0
        # lm_eval reads the model lm_bpb trains, so lm_bpb must come first
        order = list(s.tasks)
        assert order.index("lm_bpb") < order.index("lm_eval")
        assert s.tasks["lm_eval"]["checkpoint"] == "task:lm_bpb"
        for task, cfg in s.tasks.items():
            if task != "lm_eval":  # every trained task searches its LR over >= a decade
                grid = cfg["lr_grid"]
                assert len(grid) >= 4 and max(grid) / min(grid) >= 10, (name, task)
    full = suite.load("capability-full")
    assert len(full.seeds) >= 3
    assert full.tasks["permutation"]["group"] == "S5"
    assert len(suite.load("capability").seeds) == 1


@pytest.mark.parametrize("name", suite.shipped())
def test_no_shipped_suite_runs_two_variants_that_compute_the_same_function(name: str) -> None:
    from harness import plan

    assert plan.warnings(plan.plan(suite.load(name))) == []


# --- hostile and malformed suite files: each refused in one line naming the file and field ---

BASE_SUITE = """name: hand
hardware: {device: cpu, dtype: float32, threads: 1}
seeds: [0]
timeout_s: 120
model: {d_model: 32, n_layers: 1}
architectures: [transformer]
tasks:
  peak_memory: {seq_len: 64}
"""
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'lol'}]\n"
                 for i in range(9))


def _swap(old: str, new: str) -> str:
    assert old in BASE_SUITE
    return BASE_SUITE.replace(old, new, 1)


TASK = "peak_memory: {seq_len: 64}"
# case -> (file text or bytes, what the one line must name)
HAND_CASES: dict[str, tuple[str | bytes, list[str]]] = {
    "deep nesting": (_swap("name: hand", "description: " + "[" * 5000 + "]" * 5000),
                     ["description[0][0]", "nested deeper than 32", "allowed"]),
    "deep mapping": (_swap("name: hand", "description: " + "{a: " * 3000 + "1" + "}" * 3000),
                     ["description.a.a", "nested deeper than 32"]),
    "null key": (_swap("model: {d_model: 32, n_layers: 1}", "model: {null: []}"),
                 ["model:", "'null'", "not a string", "allowed: string keys"]),
    "yes key": (_swap("model: {d_model: 32, n_layers: 1}", "model: {yes: 1}"),
                ["model:", "'yes'", "not a string"]),
    "list in architectures": (_swap("architectures: [transformer]", "architectures: [[]]"),
                              ["architectures[0]", "architecture name", "transformer"]),
    "architecture twice": (_swap("architectures: [transformer]",
                                 "architectures: [transformer, transformer]"),
                           ["architectures[1]", "'transformer'", "twice"]),
    "lr_grid not a list": (_swap(TASK, "mqar: {lr_grid: 5}"),
                           ["tasks.mqar", "'lr_grid'", "list of float", "got 5"]),
    "lr_grid a string": (_swap(TASK, "mqar: {lr_grid: '0.001'}"),
                         ["tasks.mqar", "'lr_grid'", "list of float"]),
    "lr_grid nan": (_swap(TASK, "mqar: {lr_grid: [0.001, .nan]}"),
                    ["tasks.mqar", "lr_grid[1]", "finite"]),
    "seed 2**63": (_swap("seeds: [0]", f"seeds: [{2**63}]"),
                   ["seeds[0]", "[0, 2147483647]"]),
    "seed 2**31": (_swap("seeds: [0]", f"seeds: [{2**31}]"), ["seeds[0]", "[0, 2147483647]"]),
    "seed huge": (_swap("seeds: [0]", f"seeds: [{10**40}]"), ["seeds[0]", "out of range"]),
    "negative seed": (_swap("seeds: [0]", "seeds: [-1]"), ["seeds[0]", "[0, 2147483647]"]),
    "seed true": (_swap("seeds: [0]", "seeds: [true]"), ["seeds[0]", "true/false"]),
    "seeds repeated": (_swap("seeds: [0]", "seeds: [0, 0]"), ["seeds[1]", "twice", "each"]),
    "seeds a string": (_swap("seeds: [0]", "seeds: '0'"), ["seeds", "must be a list"]),
    "timeout inf": (_swap("timeout_s: 120", "timeout_s: .inf"), ["timeout_s", "604800"]),
    "timeout nan": (_swap("timeout_s: 120", "timeout_s: .nan"), ["timeout_s", "604800"]),
    "timeout 2.15e6": (_swap("timeout_s: 120", "timeout_s: 2150000"), ["timeout_s", "7 days"]),
    "timeout true": (_swap("timeout_s: 120", "timeout_s: true"), ["timeout_s", "True"]),
    "timeout zero": (_swap("timeout_s: 120", "timeout_s: 0"), ["timeout_s", "(0, 604800]"]),
    "billion laughs": (_swap("name: hand\n", "name: hand\n" + LAUGHS), ["l0", "anchors"]),
    "alias": (_swap("name: hand", "name: &n hand\ndescription: *n"), ["name", "anchors (&n)"]),
    "duplicate top key": (BASE_SUITE + "seeds: [1]\n", ["seeds", "twice", "each key once"]),
    "duplicate nested key": (_swap(TASK, "peak_memory: {seq_len: 64, seq_len: 128}"),
                             ["tasks.peak_memory.seq_len", "twice"]),
    "lr nan": (_swap(TASK, "mqar: {lr: .nan}"), ["tasks.mqar", "'lr'", "finite float"]),
    "lr inf": (_swap(TASK, "mqar: {lr: .inf}"), ["tasks.mqar", "'lr'", "finite float"]),
    "steps true": (_swap(TASK, "mqar: {steps: true}"), ["tasks.mqar", "'steps'", "int"]),
    "steps 2**40": (_swap(TASK, f"mqar: {{steps: {2**40}}}"),
                    ["tasks.mqar", "'steps'", "2147483647"]),
    "lm_eval tasks a string": (_swap(TASK, "lm_eval: {tasks: archbench_copy}"),
                               ["tasks.lm_eval", "'tasks'", "list of str", "archbench_copy"]),
    "lm_eval tasks ints": (_swap(TASK, "lm_eval: {tasks: [1]}"),
                           ["tasks.lm_eval", "tasks[0]", "str"]),
    "suite name over 200": (_swap("name: hand", "name: " + "n" * 201), ["name:", "200"]),
    "suite name a list": (_swap("name: hand", "name: [a]"), ["name:", "string"]),
    "suite name newline": (_swap("name: hand", 'name: "a\\nb"'), ["name:", "printable"]),
    "description a number": (_swap("name: hand", "description: 5"), ["description", "string"]),
    "not UTF-8": (BASE_SUITE.encode() + b"description: caf\xe9\n",
                  ["not UTF-8", "0xe9", f"offset {len(BASE_SUITE) + 16}"]),
    "NUL character": (BASE_SUITE + "description: \x00\n", ["'\\x00'", "not allowed"]),
    "timestamp": (_swap("name: hand", "name: 2024-01-01"), ["name:", "timestamp", "quote"]),
    "python tag": (_swap("name: hand", "name: !!python/object:os.system x"),
                   ["name:", "not allowed"]),
    "set tag": (_swap("model: {d_model: 32, n_layers: 1}", "model: !!set {a}"),
                ["model", "not allowed"]),
    "merge key": (_swap("model: {d_model: 32, n_layers: 1}", "model: {<<: {d_model: 32}}"),
                  ["model", "merge keys"]),
    "top level list": ("- transformer\n", ["(top level)", "must be a mapping"]),
    "two documents": (BASE_SUITE + "---\nname: x\n", ["line 9", "not valid YAML"]),
    "unknown hardware key": (_swap("threads: 1", "thread: 1"),
                             ["hardware", "'thread'", "threads"]),
    "threads a string": (_swap("threads: 1", "threads: '2'"), ["hardware.threads", "'2'"]),
    "threads huge": (_swap("threads: 1", "threads: 100000"), ["hardware.threads", "1024"]),
    "device with newline": (_swap("device: cpu", 'device: "cpu\\n"'),
                            ["hardware.device", "cuda:N"]),
    "dtype a list": (_swap("dtype: float32", "dtype: [float32]"), ["hardware.dtype", "float32"]),
    "model a list": (_swap("model: {d_model: 32, n_layers: 1}", "model: [d_model]"),
                     ["model", "must be a mapping"]),
    "model key of wrong type": (_swap("d_model: 32", "d_model: wide"),
                                ["model", "'d_model'", "int"]),
    "architecture config a list": (_swap("architectures: [transformer]",
                                         "architectures: {transformer: [1]}"),
                                   ["architectures.transformer", "mapping"]),
    "architecture key a bool": (_swap("architectures: [transformer]",
                                      "architectures: {transformer: {n_heads: true}}"),
                                ["architectures.transformer", "'n_heads'", "int"]),
    "layers beyond the limit": (_swap("n_layers: 1", "n_layers: 100000"),
                                ["model.n_layers", "at most 256"]),
    "tasks a string": (_swap(f"tasks:\n  {TASK}", "tasks: mqar"), ["tasks", "list or mapping"]),
    "sweep values a string": (_swap(TASK, "peak_memory: {sweep: {seq_len: '8, 16'}}"),
                              ["tasks.peak_memory.sweep.seq_len", "list"]),
    "sweep value repeated": (_swap(TASK, "peak_memory: {sweep: {seq_len: [8, 16, 8]}}"),
                             ["tasks.peak_memory.sweep.seq_len[2]", "repeats", "once"]),
    "sweep value invalid": (_swap(TASK, "peak_memory: {sweep: {seq_len: [8, .nan]}}"),
                            ["tasks.peak_memory.sweep.seq_len[1]", "int"]),
    "budget nan": (_swap("d_model: 32, ", "param_budget: .nan, "),
                   ["model.param_budget", "integer >= 1"]),
    "tolerance true": (_swap("d_model: 32, ", "param_budget: 50000, param_tolerance: true, "),
                       ["model.param_tolerance", "(0, 1)"]),
    "too many cells": (_swap("seeds: [0]", f"seeds: [{', '.join(map(str, range(1000)))}]")
                       .replace(TASK, "peak_memory: {sweep: {seq_len: ["
                                + ", ".join(map(str, range(1, 201))) + "]}}"),
                       ["seeds", "200,000 cells", "at most 100,000"]),
}
# The timed tasks' shared ranges (tasks/_timed.check_timing) and train_step_latency's lr.
TIMED_CASES: dict[str, tuple[str, list[str]]] = {
    "prefill warm-up negative": (_swap(TASK, "prefill_latency: {warmup: -1}"),
                                 ["tasks.prefill_latency", "warmup"]),
    "decode warm-up negative": (_swap(TASK, "decode_latency: {warmup: -1}"),
                                ["tasks.decode_latency", "warmup"]),
    "train-step warm-up negative": (_swap(TASK, "train_step_latency: {warmup: -1}"),
                                    ["tasks.train_step_latency", "warmup"]),
    "prefill max_total_s zero": (_swap(TASK, "prefill_latency: {max_total_s: 0}"),
                                 ["tasks.prefill_latency", "max_total_s"]),
    "train-step lr negative": (_swap(TASK, "train_step_latency: {lr: -1}"),
                               ["tasks.train_step_latency", "lr must be > 0"]),
}


def _refused(path: Path, content: str | bytes) -> str:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(suite.SuiteError) as info:
        suite.load(str(path))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize("case", sorted(HAND_CASES))
def test_hand_written_bad_suites_are_refused_in_one_line(case: str, tmp_path: Path) -> None:
    content, needles = HAND_CASES[case]
    message = _refused(tmp_path / "hand.yaml", content)
    for needle in needles:
        assert needle in message, (needle, message)
    assert len(message) < 1000


@pytest.mark.parametrize("case", sorted(TIMED_CASES))
def test_timed_task_ranges_are_refused(case: str, tmp_path: Path) -> None:
    content, needles = TIMED_CASES[case]
    message = _refused(tmp_path / "timed.yaml", content)
    for needle in needles:
        assert needle in message, (needle, message)


def test_the_base_of_the_hand_cases_loads(tmp_path: Path) -> None:
    path = tmp_path / "hand.yaml"
    path.write_text(BASE_SUITE)
    s = suite.load(str(path))
    assert s.seeds == (0,) and s.timeout_s == 120.0 and set(s.tasks) == {"peak_memory"}


@pytest.mark.parametrize("name", suite.shipped())
def test_every_shipped_suite_loads(name: str) -> None:
    s = suite.load(name)
    assert s.architectures and s.tasks and s.seeds
    assert len(s.name) <= suite.MAX_NAME and 0 < s.timeout_s <= suite.MAX_TIMEOUT_S


def test_a_file_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    from harness import yamlsafe

    path = tmp_path / "big.yaml"
    path.write_bytes(b"description: " + b"x" * yamlsafe.MAX_BYTES)
    assert "larger than 1,048,576 bytes" in _refused(path, path.read_bytes())


def test_too_many_values_are_refused(tmp_path: Path) -> None:
    message = _refused(tmp_path / "many.yaml", "description: [" + "0, " * 200_000 + "0]\n")
    assert "more than 100,000 values" in message and "description[" in message


def test_a_directory_or_missing_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").mkdir()
    for target in (tmp_path / "d.yaml", tmp_path / "missing.yaml"):
        with pytest.raises(suite.SuiteError) as info:
            suite.load(str(target))
        assert len(str(info.value).splitlines()) == 1
    for odd in ("a\x00b.yaml", "x" * 5000 + ".yaml", "../quick", ""):
        with pytest.raises(suite.SuiteError) as info:
            suite.load(odd)
        assert len(str(info.value).splitlines()) == 1


def test_a_registered_name_too_long_to_store_is_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import architectures

    long_name = "v" * 101
    monkeypatch.setitem(architectures.REGISTRY._entries, long_name,
                        architectures.get("transformer"))
    path = write_suite(tmp_path / "long.yaml", [long_name])
    message = _refused(path, path.read_bytes())
    assert "architectures.vvvv" in message and "longer than 100" in message


def test_hardware_overrides_name_their_flag(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text(BASE_SUITE)
    for overrides, needle in (({"threads": 0}, "--threads: "), ({"threads": True}, "--threads: "),
                              ({"device": "tpu"}, "--device: "), ({"dtype": "int8"}, "--dtype: ")):
        with pytest.raises(suite.SuiteError) as info:
            suite.load(str(path), **overrides)
        assert str(info.value).startswith(needle), str(info.value)
    assert suite.load(str(path), threads=3).hardware.threads == 3


@pytest.mark.parametrize("value", [-1, 0, True, math.nan, math.inf, 604801, "5", None])
def test_check_timeout_refuses(value: object) -> None:
    with pytest.raises(suite.SuiteError, match=r"^--timeout: .*604800"):
        suite.check_timeout(value)


def test_command_line_checks_accept_what_they_should() -> None:
    assert suite.check_timeout(1) == 1.0 and suite.check_timeout(604800.0) == 604800.0
    assert suite.check_jobs(1) == 1 and suite.check_threads(1024) == 1024
    for bad in (0, -1, 1025, True, 2.0):
        with pytest.raises(suite.SuiteError, match="^--jobs: "):
            suite.check_jobs(bad)
        with pytest.raises(suite.SuiteError, match="^--threads: "):
            suite.check_threads(bad)


@pytest.mark.parametrize("tasks_cfg,needles", [
    ({"mqar": {"lr_grid": [0.001, 0.01, 0.001]}}, ["tasks.mqar", "lr_grid", "0.001 twice"]),
    ({"lm_eval": {"tasks": ["archbench_copy", "archbench_copy"]}},
     ["tasks.lm_eval", "'archbench_copy' twice"]),
])
def test_repeats_that_would_be_measured_twice_are_refused(tmp_path: Path, tasks_cfg: dict,
                                                          needles: list[str]) -> None:
    path = write_suite(tmp_path / "rep.yaml", ["transformer"], tasks_cfg)
    message = _refused(path, path.read_bytes())
    for needle in needles:
        assert needle in message, (needle, message)


def test_the_pure_python_parser_agrees_with_libyaml() -> None:
    """The fallback (PyYAML without libyaml, and deep files) reads files the same way."""
    from harness import yamlsafe

    for name in suite.shipped():
        text = (suite.SUITES_DIR / f"{name}.yaml").read_text()
        assert yamlsafe._loads(yamlsafe._PyLoader, text, 32) == yamlsafe.loads(text)
    for bad in ("a: 1\na: 2\n", "a: &x 1\n", "{null: 1}", "a: !foo 1", "a: 2024-01-01"):
        errors = []
        for cls in (yamlsafe._Loader, yamlsafe._PyLoader):
            with pytest.raises(yamlsafe.YamlError) as info:
                yamlsafe._loads(cls, bad, 32)
            errors.append(str(info.value).split(" (")[0])
        assert errors[0] == errors[1], errors


def test_a_huge_echoed_value_keeps_the_line_short(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(BASE_SUITE.replace("architectures: [transformer]",
                                       "architectures: {looped: {n_layers: [" +
                                       "1, " * 50_000 + "1]}}"))
    message = _refused(path, path.read_bytes())
    assert len(message) <= suite.MAX_MESSAGE and "architectures.looped" in message
