"""Suite loading: shipped suites resolve; bad files stop with one line naming file, key, allowed."""

from __future__ import annotations

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
