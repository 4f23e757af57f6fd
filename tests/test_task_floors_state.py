"""Floors, chance, length knobs and copy_length_gen's in-range verdict of the state-tracking and
structure tasks (parity, permutation, dyck, listops, copy_length_gen).

Each floor is recomputed here with a plain per-sequence loop written from the task's
description, not from its ``floor`` code, and compared with what the task stores.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import tasks
from architectures.configs import ConfigError, build_config
from tasks import _seqtask, copy_length_gen, dyck, listops, parity, permutation
from tasks.instruments.context import CellContext

SMALL = {"train_size": 300, "val_size": 50, "test_size": 100}
MODULES = {"parity": parity, "permutation": permutation, "dyck": dyck, "listops": listops,
           "copy_length_gen": copy_length_gen}


def _cfg(mod, **over):
    return build_config(mod.Config, {**SMALL, **over}, mod.__name__)


def _scored(targets: np.ndarray) -> list[tuple[int, int]]:
    """(row, position) of every scored target."""
    return [(i, t) for i, row in enumerate(targets.tolist()) for t, y in enumerate(row)
            if y != -100]


def _most_common(counter: Counter) -> int:
    """The most frequent key, the smallest on ties."""
    return min(counter, key=lambda k: (-counter[k], k))


# ---------------------------------------------------------------------------------------------
# independent floors


def _parity_floor(test) -> float:
    labels = [int(test[1][i][t]) for i, t in _scored(test[1])]
    return max(labels.count(0), labels.count(1)) / len(labels)


def _permutation_floor(test) -> float:
    hits = [(test[0][i][0] if t == 0 else 0) == test[1][i][t] for i, t in _scored(test[1])]
    return sum(hits) / len(hits)


def _dyck_floor(cfg, test) -> float:
    seq, tgt = dyck.generate(cfg, dyck.FLOOR_SIZE, dyck.FLOOR_SEED)  # the floor's own sample
    seen: dict[int, Counter] = {}
    for row, trow in zip(seq.tolist(), tgt.tolist(), strict=True):
        for tok, y in zip(row, trow, strict=True):
            seen.setdefault(tok, Counter())[y] += 1
    table = {tok: _most_common(c) for tok, c in seen.items()}
    hits = [table[int(test[0][i][t])] == test[1][i][t] for i, t in _scored(test[1])]
    return sum(hits) / len(hits)


def _listops_floor(cfg, test) -> float:
    seq, tgt = listops.generate(cfg, listops.FLOOR_SIZE, listops.FLOOR_SEED)
    seen: dict[int, Counter] = {}
    for row, trow in zip(seq.tolist(), tgt.tolist(), strict=True):
        value = next(y for y in trow if y != -100)
        seen.setdefault(row[0], Counter())[value] += 1
    table = {op: _most_common(c) for op, c in seen.items()}
    hits = [table[int(test[0][i][0])] == test[1][i][t] for i, t in _scored(test[1])]
    return sum(hits) / len(hits)


def _copy_floor(cfg, test) -> float:
    hits = []
    for row, trow in zip(test[0].tolist(), test[1].tolist(), strict=True):
        n = row.index(cfg.sep)
        for t in range(n, 2 * n + 1):  # the separator and every copied symbol are scored
            assert trow[t] != -100
            hits.append((cfg.eos if t == 2 * n else copy_length_gen.FLOOR_SYMBOL) == trow[t])
    return sum(hits) / len(hits)


FLOOR_CASES = [
    ("parity", {}), ("parity", {"n_bits": 5, "running": True}),
    ("permutation", {}), ("permutation", {"group": "S5", "length": 6}),
    ("dyck", {}), ("dyck", {"n_types": 2, "max_depth": 3, "length": 20}),
    ("listops", {}), ("listops", {"max_depth": 2, "max_args": 3, "max_len": 12}),
    ("copy_length_gen", {}), ("copy_length_gen", {"n_symbols": 4, "train_max_len": 6,
                                                  "test_max_len": 9}),
]


@pytest.mark.parametrize("name,over", FLOOR_CASES)
def test_floor_matches_an_independent_count(name: str, over: dict) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod, **over)
    test = mod.generate(cfg, 300, seed=1)
    expected = {
        "parity": lambda: _parity_floor(test),
        "permutation": lambda: _permutation_floor(test),
        "dyck": lambda: _dyck_floor(cfg, test),
        "listops": lambda: _listops_floor(cfg, test),
        "copy_length_gen": lambda: _copy_floor(cfg, test),
    }[name]()
    value, strategy = mod.floor(cfg, test)
    assert value == pytest.approx(expected, abs=1e-12)
    assert strategy and "\n" not in strategy
    assert mod.chance(cfg) <= value + 0.05 and 0 < mod.chance(cfg) < 1


def test_copy_length_gen_floor_on_the_longer_strings() -> None:
    cfg = _cfg(copy_length_gen, n_symbols=4, train_max_len=6, test_max_len=9)
    *_, test_long = copy_length_gen.splits(cfg, seed=0)
    assert copy_length_gen.floor(cfg, test_long)[0] == pytest.approx(_copy_floor(cfg, test_long))


def test_chance_is_one_over_the_answers() -> None:
    assert parity.chance(_cfg(parity)) == 0.5
    assert permutation.chance(_cfg(permutation, group="S5")) == 1 / 120
    assert dyck.chance(_cfg(dyck, n_types=3)) == 1 / 4
    assert listops.chance(_cfg(listops)) == 1 / 10
    assert copy_length_gen.chance(_cfg(copy_length_gen, n_symbols=16)) == 1 / 17


def test_floors_at_the_defaults_beat_chance_where_a_shortcut_exists() -> None:
    """The figures the issue measured: S3 0.219 (first position a copy), listops ~0.2."""
    cfg = _cfg(permutation, test_size=1000)
    assert permutation.floor(cfg, permutation.generate(cfg, 1000, 1))[0] == pytest.approx(
        (1 + 15 / 6) / 16, abs=0.02)
    cfg = _cfg(listops)
    assert 0.15 < listops.floor(cfg, listops.generate(cfg, 1000, 1))[0] < 0.3
    cfg = _cfg(dyck)
    assert 0.6 < dyck.floor(cfg, dyck.generate(cfg, 500, 1))[0] < 0.7


# ---------------------------------------------------------------------------------------------
# the length axis


@pytest.mark.parametrize("name,key,low,minimum", [
    ("parity", "n_bits", 0, 1), ("permutation", "length", 0, 1), ("dyck", "length", 1, 2),
    ("listops", "max_len", 3, 4), ("copy_length_gen", "min_len", 0, 1),
    ("copy_length_gen", "test_max_len", 16, 17),
])
def test_a_length_below_the_minimum_is_one_line_naming_it(name, key, low, minimum) -> None:
    with pytest.raises(ConfigError) as err:
        tasks.resolve_config(name, **{key: low})
    message = str(err.value)
    assert "\n" not in message and key in message and f">= {minimum}" in message
    assert f"got {low}" in message
    tasks.resolve_config(name, **{key: minimum})  # the minimum itself is allowed


@pytest.mark.parametrize("name", sorted(MODULES))
def test_model_seq_len_is_the_widest_row_a_model_reads(name: str) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod)
    if name == "copy_length_gen":
        widths = [d[0].shape[1] for d in copy_length_gen.splits(cfg, seed=0)]
        assert cfg.model_seq_len == max(widths) == cfg.test_seq_len > cfg.seq_len
    else:
        assert cfg.model_seq_len == mod.generate(cfg, 8, seed=0)[0].shape[1] == cfg.seq_len


# ---------------------------------------------------------------------------------------------
# rows


def _ctx(arch: str) -> CellContext:
    return CellContext(arch=arch, arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                       device="cpu", dtype="float32", threads=1)


@pytest.mark.parametrize("name", ["parity", "permutation"])
def test_accuracy_row_carries_chance_and_floor(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    mod = MODULES[name]
    cfg = _cfg(mod, steps=3, batch_size=8)
    acc = tasks.get(name).run(cfg, _ctx("lstm"))[0]
    test = _seqtask.cached_splits(mod.generate, cfg, 0, name=name, version=mod.VERSION)[0][2]
    assert acc.name == "accuracy" and acc.extra["chance"] == mod.chance(cfg)
    assert acc.extra["floor"] == pytest.approx(mod.floor(cfg, test)[0])
    assert acc.extra["floor_strategy"] == mod.floor(cfg, test)[1]


@pytest.mark.parametrize("learned", [False, True])
def test_copy_length_gen_rows_carry_floors_and_the_in_range_verdict(
        learned: bool, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    if learned:  # a threshold every model meets, to see the other wording
        monkeypatch.setattr(copy_length_gen, "LEARNED_IN_RANGE", 0.0)
    cfg = _cfg(copy_length_gen, n_symbols=4, min_len=2, train_max_len=4, test_max_len=6,
               steps=5, batch_size=8)
    rows = {m.name: m for m in copy_length_gen.run(cfg, _ctx("transformer"))}
    _, _, test_in, test_long = copy_length_gen.splits(cfg, seed=0)
    head, in_range = rows["accuracy"], rows["accuracy_in_range"]
    for row, test in ((head, test_long), (in_range, test_in)):
        assert row.extra["chance"] == 1 / 5
        assert row.extra["floor"] == pytest.approx(_copy_floor(cfg, test))
        assert row.extra["floor_strategy"].startswith("no memory")
        assert row.n_samples == int((test[1] != -100).sum())
        assert row.extra["test_sequences"] == len(test[0])
    assert head.extra["floor"] != in_range.extra["floor"]  # each on its own test set
    assert head.extra["accuracy_in_range"] == in_range.value
    assert head.extra["learned_in_range"] is (in_range.value >= copy_length_gen.LEARNED_IN_RANGE)
    assert head.extra["learned_in_range"] is learned  # 5 steps learn nothing; threshold 0 passes
    verdict = "; learned in range" if learned else "; not learned in range"
    assert verdict in head.method and "longer than any trained on" in head.method
    assert "learned" not in in_range.method
