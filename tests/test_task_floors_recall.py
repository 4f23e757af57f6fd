"""Floors, chance, length knobs and layouts of the recall tasks (mqar, induction_heads,
selective_copy, flip_flop, icl_regression).

Each floor is recomputed here with a plain per-sequence loop written from the task's
description, not from its ``floor`` code, and compared with what the task reports.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import tasks
from architectures.configs import ConfigError, build_config
from tasks import _seqtask, flip_flop, icl_regression, induction_heads, mqar, selective_copy
from tasks.instruments.context import CellContext

SMALL = {"train_size": 300, "val_size": 50, "test_size": 100}
MODULES = {"mqar": mqar, "induction_heads": induction_heads, "selective_copy": selective_copy,
           "flip_flop": flip_flop, "icl_regression": icl_regression}


def _cfg(mod, **over):
    return build_config(mod.Config, {**SMALL, **over}, mod.__name__)


def _scored(targets: np.ndarray) -> list[tuple[int, int]]:
    """(row, position) of every scored target."""
    return [(i, t) for i, row in enumerate(targets.tolist()) for t, y in enumerate(row)
            if y != -100]


def _most_common(tokens: list[int]) -> int | None:
    """The most frequent token, the smallest on ties; None for no tokens."""
    counts = Counter(tokens)
    return min(counts, key=lambda k: (-counts[k], k)) if counts else None


# ---------------------------------------------------------------------------------------------
# independent floors


def _mqar_floor(cfg, test) -> float:
    hits = []
    for i, t in _scored(test[1]):
        before = [v for v in test[0][i][:t].tolist() if cfg.n_keys <= v < 2 * cfg.n_keys]
        hits.append(_most_common(before) == test[1][i][t])
    return sum(hits) / len(hits)


def _induction_floor(cfg, test) -> float:
    hits = []
    for i, t in _scored(test[1]):
        before = [v for v in test[0][i][:t].tolist() if v != cfg.trigger]
        hits.append(_most_common(before) == test[1][i][t])
    return sum(hits) / len(hits)


def _selective_copy_floor(cfg, test) -> float:
    hits = []
    for i, t in _scored(test[1]):
        region = [v for v in test[0][i][: cfg.region].tolist()
                  if v not in (selective_copy.BLANK, selective_copy.SEP)]
        hits.append(_most_common(region) == test[1][i][t])
    return sum(hits) / len(hits)


def _flip_flop_floor(cfg, test) -> float:
    hits = [test[0][i][t - 1] == test[1][i][t] for i, t in _scored(test[1])]
    return sum(hits) / len(hits)


def _icl_floor(cfg, test) -> float:
    """Copy the y of an earlier equal x; else the chance of a uniform pick among unshown y."""
    expected = []
    for i, t in _scored(test[1]):
        row = test[0][i].tolist()
        shown = {row[j]: row[j + 1] for j in range(0, t, 2)}  # x -> y, the latest wins
        if row[t] in shown:
            expected.append(float(shown[row[t]] == test[1][i][t]))
        else:
            expected.append(1 / (cfg.p - len(set(shown.values()))))
    return sum(expected) / len(expected)


FLOORS = {"mqar": _mqar_floor, "induction_heads": _induction_floor,
          "selective_copy": _selective_copy_floor, "flip_flop": _flip_flop_floor,
          "icl_regression": _icl_floor}
CASES = [(name, over) for name in sorted(MODULES) for over in [{}, *{
    "mqar": [{"n_pairs": 4, "n_keys": 6, "seq_len": 20}],  # values repeat: floor above chance
    "induction_heads": [{"seq_len": 6, "n_symbols": 3}],
    "selective_copy": [{"region": 8, "n_tokens": 5, "n_data": 3}],
    "flip_flop": [{"n_instr": 8, "p_ignore": 0.3}],
    "icl_regression": [{"p": 5, "n_examples": 12, "skip": 0}, {"p": 7, "skip": 3}],
}[name]]]


@pytest.mark.parametrize("name,over", CASES)
def test_floor_matches_an_independent_recomputation(name: str, over: dict) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod, **over)
    test = mod.generate(cfg, 200, seed=1)
    value, strategy = mod.floor(cfg, test)
    assert value == pytest.approx(FLOORS[name](cfg, test), abs=1e-12)
    assert strategy.strip() and "\n" not in strategy
    assert 0 < mod.chance(cfg) < 1


@pytest.mark.parametrize("name", ["flip_flop", "icl_regression"])
def test_redesigned_floors_sit_near_chance_at_the_defaults(name: str) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod)
    value, _ = mod.floor(cfg, mod.generate(cfg, 1000, seed=0))
    assert abs(value - mod.chance(cfg)) < 0.1


def test_old_trivial_strategies_no_longer_score() -> None:
    """What the issue measured: a repeated x answered by copy (icl_regression), and copying
    the previous bit at every read (flip_flop). Neither position is scored any more."""
    cfg = _cfg(icl_regression)
    seq, tgt = icl_regression.generate(cfg, 300, seed=0)
    for row, t in zip(seq.tolist(), tgt.tolist(), strict=True):
        xs = row[0::2]
        for k in range(cfg.n_examples):
            assert (t[2 * k] != -100) == (k >= cfg.skip and xs[k] not in xs[:k])
    cfg = _cfg(flip_flop)
    seq, tgt = flip_flop.generate(cfg, 300, seed=0)
    reads = scored = 0
    for row, t in zip(seq.tolist(), tgt.tolist(), strict=True):
        for k in range(1, cfg.n_instr):
            if row[2 * k] == flip_flop.READ:
                reads += 1
                scored += t[2 * k] != -100
                assert (t[2 * k] != -100) == (row[2 * k - 2] == flip_flop.IGNORE)
        assert row[-4] == flip_flop.IGNORE and row[-2] == flip_flop.READ and t[-2] != -100
    assert 0 < scored < reads


def test_every_accuracy_row_carries_chance_and_floor(tmp_path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    ctx = CellContext(arch="lstm", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    tiny = {"train_size": 200, "val_size": 20, "test_size": 40, "steps": 2, "batch_size": 4,
            "lr_grid": []}
    for name, mod in sorted(MODULES.items()):
        cfg = build_config(mod.Config, {**tiny, **({"seq_len": 24, "n_pairs": 4}
                                                     if name == "mqar" else {})}, name)
        row = next(m for m in mod.TASK.run(cfg, ctx) if m.name == "accuracy")
        (_, _, test), _ = _seqtask.cached_splits(mod.generate, cfg, 0, name=name,
                                                 version=mod.VERSION)
        assert row.extra["chance"] == pytest.approx(mod.chance(cfg))
        assert row.extra["floor"] == pytest.approx(FLOORS[name](cfg, test))
        assert row.extra["floor_strategy"] == mod.floor(cfg, test)[1]


# ---------------------------------------------------------------------------------------------
# length knobs


@pytest.mark.parametrize("name,key,bad,minimum", [
    ("mqar", "seq_len", {"seq_len": 47}, "48"),
    ("mqar", "seq_len", {"n_pairs": 4, "seq_len": 11}, "12"),
    ("induction_heads", "seq_len", {"seq_len": 2}, "3"),
    ("selective_copy", "region", {"region": 7}, "8"),
    ("flip_flop", "n_instr", {"n_instr": 2}, "3"),
    ("icl_regression", "n_examples", {"n_examples": 2}, "3"),
    ("icl_regression", "n_examples", {"n_examples": 4, "skip": 4}, "5"),
])
def test_a_length_below_the_minimum_is_one_line_naming_it(name: str, key: str, bad: dict,
                                                          minimum: str) -> None:
    with pytest.raises(ConfigError) as err:
        tasks.resolve_config(name, **bad)
    message = str(err.value)
    assert "\n" not in message and key in message and f">= {minimum}" in message


@pytest.mark.parametrize("name", sorted(MODULES))
def test_model_seq_len_is_the_longest_sequence_a_model_reads(name: str) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod)
    x, _ = mod.generate(cfg, 8, seed=0)
    assert cfg.model_seq_len == x.shape[1] == cfg.seq_len


def test_mqar_length_is_a_knob_independent_of_the_content() -> None:
    short, long = _cfg(mqar, n_pairs=8, seq_len=24), _cfg(mqar, n_pairs=8, seq_len=200)
    for cfg in (short, long):
        x, y = mqar.generate(cfg, 20, seed=0)
        assert x.shape == (20, cfg.seq_len) and ((y != -100).sum(1) == 8).all()
        assert cfg.vocab_size == short.vocab_size


# ---------------------------------------------------------------------------------------------
# MQAR layout


def test_mqar_layout_pairs_then_spread_queries_among_noise_and_targets_by_brute_force() -> None:
    cfg = _cfg(mqar, n_pairs=6, n_keys=10, n_noise=3, seq_len=40)
    seq, tgt = mqar.generate(cfg, 300, seed=0)
    keys, noise = range(10), range(20, 23)
    first_query, gaps = [], set()
    for row, t in zip(seq.tolist(), tgt.tolist(), strict=True):
        context = row[:12]
        assert all(k in keys for k in context[0::2]) and len(set(context[0::2])) == 6
        assert all(10 <= v < 20 for v in context[1::2])
        rest, targets = row[12:], t[12:]
        queries = [i for i, tok in enumerate(rest) if tok in keys]
        assert sorted(rest[i] for i in queries) == sorted(context[0::2])  # each key once
        assert all(tok in noise for i, tok in enumerate(rest) if i not in queries)
        assert all(y == -100 for y in t[:12])
        for i, tok in enumerate(rest):
            if i not in queries:
                assert targets[i] == -100
                continue
            bound = [context[j + 1] for j in range(0, 12, 2) if context[j] == tok]
            assert targets[i] == bound[0]  # the value bound to the queried key
        first_query.append(queries[0])
        gaps.update(b - a for a, b in zip(queries, queries[1:], strict=False))
    # queries are spread over the rest, not packed at its start: filler lies between them
    assert max(gaps) > 3 and len(set(first_query)) > 5 and max(first_query) > 3


def test_mqar_defaults_have_16_pairs_and_recall_distances_beyond_a_16_window() -> None:
    cfg = _cfg(mqar)
    assert cfg.n_pairs >= 16 and cfg.seq_len >= 64 and cfg.model_seq_len == cfg.seq_len
    seq, tgt = mqar.generate(cfg, 200, seed=0)
    distances = []
    for row, t in zip(seq.tolist(), tgt.tolist(), strict=True):
        where = {row[j]: j for j in range(0, 2 * cfg.n_pairs, 2)}
        distances += [q - where[row[q]] for q in range(len(row)) if t[q] != -100]
    assert np.mean(np.array(distances) > 16) > 0.8
