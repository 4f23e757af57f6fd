"""Fair sizing to a parameter budget, and the zoo suite that must list every shipped variant."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import replace

import pytest
import torch

import architectures
import tasks
from architectures.sizing import count_params, size_all, size_for_budget
from harness import suite

BUDGET = 200_000
BASE = {"vocab_size": 256, "n_layers": 2}
# structure set by hand where the default heads give no width within 5% of BUDGET: the sizer
# never changes it on its own
STRUCTURE = {"block_state": {"n_heads": 2}, "hybrid": {"n_heads": 2}}


def base_config(name: str) -> dict[str, int]:
    """The shared config (less keys the variant fixes) plus any structure set by hand;
    sequence-length-sized weights (linformer's E, F) kept short."""
    keys = set(architectures.config_keys(name)) - set(architectures.fixed_keys(name))
    extra = {"max_seq_len": 256} if "max_seq_len" in keys else {}
    shared = {k: v for k, v in BASE.items() if k in keys}
    return {**shared, **extra, **STRUCTURE.get(name, {})}


@pytest.mark.parametrize("name", architectures.names())
def test_every_variant_sizes_to_the_budget_and_keeps_its_structure(name: str) -> None:
    user = base_config(name)
    sized = size_for_budget(name, BUDGET, **user)
    assert abs(sized.total_params - BUDGET) <= 0.05 * BUDGET
    assert sized.rel_error == pytest.approx((sized.total_params - BUDGET) / BUDGET)
    assert 0 < sized.active_params <= sized.total_params
    assert (sized.matched, sized.moved) == ("total", {})
    # structure kept: the variant's defaults and the user's keys, only d_model chosen
    assert sized.config == architectures.resolve_config(name, **user,
                                                        d_model=sized.config["d_model"])
    torch.manual_seed(0)
    model = architectures.build(name, **sized.config)  # the resolved config builds as counted
    assert model.num_params() == sized.total_params
    assert sized.config == architectures.resolve_config(name, **sized.config)


def test_no_silent_head_change_names_the_knob_to_set() -> None:
    with pytest.raises(ValueError) as err:
        size_for_budget("hybrid", BUDGET, **BASE)  # 4 heads: widths 72 and 80 miss by > 5%
    message = str(err.value)
    assert message.startswith("hybrid: no d_model gives 200,000 total parameters within 5%")
    assert "closest is 181,728 at d_model=72" in message and "218,560 at d_model=80" in message
    assert "set n_heads (now 4)" in message
    assert size_for_budget("hybrid", BUDGET, n_heads=2, **BASE).config["n_heads"] == 2


def test_only_declared_free_knobs_move_and_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    free = replace(architectures.get("hybrid"), free_knobs=("d_model", "n_heads"))
    monkeypatch.setitem(architectures.REGISTRY._entries, "hybrid", free)
    sized = size_for_budget("hybrid", BUDGET, **BASE)
    assert sized.moved == {"n_heads": 2} and sized.config["n_heads"] == 2
    assert abs(sized.rel_error) <= 0.05


def test_match_active_sizes_moe_on_the_parameters_a_token_uses() -> None:
    sized = size_for_budget("moe", BUDGET, match="active", **BASE)
    assert sized.matched == "active"
    assert abs(sized.active_params - BUDGET) <= 0.05 * BUDGET < sized.total_params - BUDGET
    assert sized.rel_error == pytest.approx((sized.active_params - BUDGET) / BUDGET)
    assert (sized.config["n_heads"], sized.config["n_experts"], sized.config["top_k"]) == (4, 4, 2)
    with pytest.raises(ValueError, match="match must be one of total, active"):
        size_for_budget("moe", BUDGET, match="both")


def test_size_all_drops_keys_a_variant_fixes() -> None:
    (looped,) = size_all(["looped"], BUDGET, **BASE)
    assert looped.config["n_layers"] == 1
    with pytest.raises(architectures.ConfigError, match="looped: n_layers is fixed at 1"):
        size_for_budget("looped", BUDGET, **BASE)


def test_counting_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    total, active = count_params("transformer", d_model=64)
    assert torch.equal(torch.rand(3), expected)
    assert total == active == architectures.build("transformer", d_model=64).num_params()


def test_impossible_budget_names_variant_budget_and_closest() -> None:
    with pytest.raises(ValueError,
                       match=r"transformer: .*1,000 total parameters.*closest is [\d,]+ at"):
        size_for_budget("transformer", 1_000, vocab_size=256)
    with pytest.raises(ValueError, match="d_model is what size_for_budget chooses"):
        size_for_budget("transformer", BUDGET, d_model=64)


def test_widths_a_variant_refuses_are_skipped() -> None:
    sized = size_for_budget("transformer", BUDGET, n_heads=4, **BASE)
    d = sized.config["d_model"]
    assert d % 8 == 0 and sized.config["n_heads"] == 4  # 4 heads of even width


def test_size_all_drops_keys_a_variant_lacks() -> None:
    rows = size_all(["transformer", "mamba"], BUDGET, n_heads=4, d_state=8, **BASE)
    assert [r.name for r in rows] == ["transformer", "mamba"]
    assert rows[1].config["d_state"] == 8 and "n_heads" not in rows[1].config


def shipped_variants() -> set[str]:
    """Names registered by the modules of the `architectures` package (not by plugins)."""
    names = set()
    for info in pkgutil.iter_modules(architectures.__path__):
        module = importlib.import_module(f"architectures.{info.name}")
        variant = getattr(module, "VARIANT", None)
        if isinstance(variant, architectures.Variant) and variant.name in architectures.REGISTRY:
            names.add(variant.name)
    return names


def test_zoo_runs_every_variant_through_every_efficiency_task() -> None:
    zoo = suite.load("zoo")
    missing = shipped_variants() - set(zoo.architectures)
    assert not missing, f"add {sorted(missing)} to harness/suites/zoo.yaml"
    efficiency = {n for n in tasks.names() if tasks.get(n).kind == "efficiency"}
    assert efficiency <= set(zoo.tasks), f"add {sorted(efficiency - set(zoo.tasks))} to the zoo"
    assert all(cfg["d_model"] == 64
               and cfg["n_layers"] == architectures.fixed_keys(name).get("n_layers", 2)
               for name, cfg in zoo.architectures.items())


def test_non_embedding_count_leaves_out_embedding_and_head() -> None:
    import architectures
    from architectures.sizing import count_params

    model = architectures.build("transformer", d_model=32, n_layers=1, vocab_size=50)
    total, _ = count_params("transformer", d_model=32, n_layers=1, vocab_size=50)
    core, _ = count_params("transformer", d_model=32, n_layers=1, vocab_size=50,
                           non_embedding=True)
    assert total == model.num_params()
    assert total - core == model.embed.weight.numel() + model.head.weight.numel() == 2 * 50 * 32
    moe_total, moe_active = count_params("moe", d_model=32, n_layers=1, non_embedding=True)
    assert moe_active < moe_total
