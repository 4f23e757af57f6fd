"""ListOps and bounded Dyck: seeded data, disjoint splits, exact targets, config checks."""

from __future__ import annotations

import numpy as np
import pytest

import tasks
from architectures.configs import ConfigError, build_config
from tasks import _seqtask, dyck, listops
from tasks.instruments.context import CellContext

SMALL = {"train_size": 300, "val_size": 50, "test_size": 100}
MODULES = {"listops": listops, "dyck": dyck}


def _cfg(mod, **over):
    return build_config(mod.Config, {**SMALL, **over}, mod.__name__)





# ---------------------------------------------------------------------------------------------
# listops


def _parse(tokens: list[int]) -> tuple[int, int, int]:
    """(value, tokens read, depth) of the expression at the start of ``tokens``, read with an
    explicit stack independent of the generator."""
    stack: list[tuple[str, list[int]]] = []
    names = {10: "min", 11: "max", 12: "med", 13: "sm"}
    depth = 0
    for i, tok in enumerate(tokens):
        if tok in names:
            stack.append((names[tok], []))
            depth = max(depth, len(stack))
        elif tok == 14:
            op, args = stack.pop()
            assert len(args) >= 2
            ordered = sorted(args)
            value = {"min": ordered[0], "max": ordered[-1], "sm": sum(args) % 10,
                     "med": ordered[(len(args) - 1) // 2]}[op]
            if not stack:
                return value, i + 1, depth
            stack[-1][1].append(value)
        else:
            assert 0 <= tok <= 9 and stack
            stack[-1][1].append(tok)
    raise AssertionError("unclosed expression")


def test_listops_lower_median_and_operators() -> None:
    assert listops.apply(listops.MED, [7, 1, 4, 9]) == 4  # sorted 1 4 7 9: the lower middle
    assert listops.apply(listops.MED, [3, 8, 5]) == 5
    assert listops.apply(listops.SM, [9, 8, 7]) == 4
    assert listops.apply(listops.MIN, [3, 2]) == 2 and listops.apply(listops.MAX, [3, 2]) == 3
    with pytest.raises(ValueError, match="operator"):
        listops.apply(listops.CLOSE, [1, 2])


@pytest.mark.parametrize("over", [{}, {"max_depth": 5, "max_args": 6, "max_len": 24,
                                       "p_branch": 0.6}, {"max_depth": 1, "max_len": 4}])
def test_listops_targets_match_an_independent_parser(over: dict) -> None:
    cfg = _cfg(listops, **over)
    seq, tgt = listops.generate(cfg, 300, seed=0)
    for row, t in zip(seq, tgt, strict=True):
        value, n, depth = _parse(list(row))
        assert n <= cfg.max_len and depth <= cfg.max_depth
        assert row[n] == listops.QUERY and (row[n + 1 :] == listops.PAD).all()
        assert t[n] == value and (np.delete(t, n) == -100).all()
        assert row[0] in listops.OPERATORS and not (row[:n] == listops.PAD).any()


def test_listops_lengths_vary_and_labels_are_not_degenerate() -> None:
    cfg = _cfg(listops)
    seq, tgt = listops.generate(cfg, 2000, seed=0)
    lengths = (seq != listops.PAD).sum(1)
    assert lengths.min() < 10 < lengths.max()
    hist = np.bincount(tgt[tgt != -100], minlength=10) / len(seq)
    assert hist.min() > 0.03 and hist.max() < 0.3  # every digit occurs, none dominates
    depth = np.cumsum(np.isin(seq, listops.OPERATORS).astype(int) - (seq == listops.CLOSE), 1)
    assert set(depth.max(1)) == set(range(1, cfg.max_depth + 1))  # every nesting occurs


def test_listops_generates_twenty_thousand_rows() -> None:
    # its speed is a benchmark (benchmarks/bench_generators.py), not a timed unit test
    cfg = _cfg(listops)
    seq, tgt = listops.generate(cfg, 20_000, seed=0)
    assert seq.shape == tgt.shape == (20_000, cfg.seq_len)
    assert ((tgt != -100).sum(1) == 1).all()  # one scored position per sequence


# ---------------------------------------------------------------------------------------------
# dyck


@pytest.mark.parametrize("over", [{}, {"n_types": 2, "max_depth": 2, "length": 33},
                                  {"n_types": 1, "max_depth": 4, "p_open": 0.8}])
def test_dyck_targets_match_an_explicit_stack(over: dict) -> None:
    cfg = _cfg(dyck, **over)
    k = cfg.n_types
    seq, tgt = dyck.generate(cfg, 200, seed=0)
    assert cfg.empty == 2 * k and not (seq == cfg.empty).any()
    deepest = 0
    for row, t in zip(seq, tgt, strict=True):
        stack: list[int] = []
        for tok, target in zip(row, t, strict=True):
            if tok < k:
                stack.append(int(tok))
            else:
                assert stack and tok == k + stack[-1]  # the prefix stays well nested
                stack.pop()
            assert len(stack) <= cfg.max_depth
            deepest = max(deepest, len(stack))
            assert target == (k + stack[-1] if stack else cfg.empty)
    assert deepest == cfg.max_depth  # the bound is reached, not just respected


def test_dyck_classes_all_occur() -> None:
    cfg = _cfg(dyck)
    _, tgt = dyck.generate(cfg, 500, seed=0)
    assert set(np.unique(tgt)) == set(range(cfg.n_types, 2 * cfg.n_types + 1))


# ---------------------------------------------------------------------------------------------
# configs and a tiny end-to-end run


@pytest.mark.parametrize("name,bad", [
    ("listops", {"max_depth": 0}), ("listops", {"max_args": 1}), ("listops", {"max_len": 3}),
    ("listops", {"p_branch": 1.5}), ("listops", {"p_branch": -0.1}), ("listops", {"steps": 0}),
    ("listops", {"max_len": 32.0}), ("listops", {"colour": 1}),
    ("dyck", {"n_types": 0}), ("dyck", {"max_depth": 0}), ("dyck", {"length": 1}),
    ("dyck", {"p_open": 0.0}), ("dyck", {"p_open": 1.0}), ("dyck", {"lr": 0.0}),
    ("dyck", {"warmup_frac": 1.0}),
])
def test_config_rejects_bad_values(name: str, bad: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.resolve_config(name, **bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_tiny_run_reports_accuracy(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    cfg = _cfg(MODULES[name], steps=3, batch_size=8)
    ctx = CellContext(arch="lstm", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    metrics = tasks.get(name).run(cfg, ctx)
    acc = metrics[0]
    assert acc.name == "accuracy" and acc.status == "ok" and 0 <= acc.value <= 1
    mod = MODULES[name]
    test = _seqtask.cached_splits(mod.generate, cfg, 0, name=name, version=mod.VERSION)[0][2]
    assert acc.extra["chance"] == mod.chance(cfg)
    assert (acc.extra["floor"], acc.extra["floor_strategy"]) == mod.floor(cfg, test)
