"""Synthetic capability tasks: seeded data, disjoint splits, exact targets, config checks."""

from __future__ import annotations

import numpy as np
import pytest

import tasks
from architectures.configs import ConfigError, build_config
from tasks import (
    _seqtask,
    copy_length_gen,
    dyck,
    flip_flop,
    icl_regression,
    induction_heads,
    listops,
    mqar,
    parity,
    permutation,
    selective_copy,
)

SMALL = {"train_size": 300, "val_size": 50, "test_size": 100}
MODULES = {"selective_copy": selective_copy, "induction_heads": induction_heads,
           "parity": parity, "flip_flop": flip_flop, "listops": listops, "dyck": dyck,
           "permutation": permutation, "icl_regression": icl_regression,
           "copy_length_gen": copy_length_gen}
# configs whose generation is checked besides the defaults
VARIANTS = {"permutation": [{"group": "S5", "length": 10}],
            "icl_regression": [{"p": 11, "n_examples": 5, "skip": 0}],
            "copy_length_gen": [{"min_len": 1, "train_max_len": 3}],
            "listops": [{"max_depth": 1, "max_args": 3, "max_len": 12}],
            "dyck": [{"n_types": 1, "max_depth": 2, "length": 10}]}
GENERATION_CASES = [(n, over) for n in sorted(MODULES) for over in [{}, *VARIANTS.get(n, [])]]


def _cfg(mod, **over):
    return build_config(mod.Config, {**SMALL, **over}, mod.__name__)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_registered_as_accuracy_task(name: str) -> None:
    task = tasks.get(name)
    assert task.kind == "accuracy" and task.headline == "accuracy" and task.doc
    assert task.config_cls is MODULES[name].Config and task.version == MODULES[name].VERSION
    extra = ["accuracy_in_range"] if name == "copy_length_gen" else []
    assert [m.name for m in task.metrics] == ["accuracy", *extra, "train_loss"]


@pytest.mark.parametrize("name,over", GENERATION_CASES)
def test_generation_deterministic_per_seed_and_differs_across_seeds(name: str, over) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod, **over)
    x1, y1 = mod.generate(cfg, 64, seed=5)
    x2, y2 = mod.generate(cfg, 64, seed=5)
    x3, _ = mod.generate(cfg, 64, seed=6)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == y1.shape == (64, cfg.seq_len) and x1.dtype == y1.dtype == np.int64
    assert x1.min() >= 0 and x1.max() < cfg.vocab_size
    scored = y1[y1 != -100]
    assert scored.size and scored.min() >= 0 and scored.max() < cfg.vocab_size


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"copy_length_gen"}))  # own splits
def test_train_val_and_test_splits_are_disjoint(name: str) -> None:
    mod = MODULES[name]
    cfg = _cfg(mod)
    (x, _), (v, _), (t, u) = _seqtask.disjoint_splits(mod.generate, cfg, seed=1, with_val=True)
    assert len(x) == 300 and len(v) > 0 and len(t) == len(u) > 0
    rows = [{r.tobytes() for r in split} for split in (x, v, t)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]


def test_disjoint_splits_drop_duplicates_and_refuse_empty_test() -> None:
    cfg = _cfg(parity, n_bits=4, train_size=500, test_size=200)  # 16 possible sequences
    with pytest.raises(ValueError, match="parity.*every test sequence"):
        _seqtask.disjoint_splits(parity.generate, cfg, seed=0, name="parity", hint="raise")
    cfg = _cfg(parity, n_bits=8, train_size=100, test_size=200)
    _, (t, _) = _seqtask.disjoint_splits(parity.generate, cfg, seed=0)
    assert 0 < len(t) < 200


def test_lr_schedule_matches_mqar() -> None:
    cfg = build_config(mqar.Config, {"steps": 100, "lr": 1e-3}, "mqar")
    for step in (0, 5, 9, 10, 50, 99):
        assert mqar.lr_at(step, cfg) == _seqtask.lr_at(step, steps=100, lr=1e-3, warmup_frac=0.1)
    assert mqar.lr_at(9, cfg) == pytest.approx(1e-3)
    assert mqar.lr_at(99, cfg) == pytest.approx(1e-4, rel=1e-2)


def test_selective_copy_targets() -> None:
    cfg = _cfg(selective_copy, region=10, n_tokens=3, n_data=4)
    seq, tgt = selective_copy.generate(cfg, 200, seed=0)
    for row, t in zip(seq, tgt, strict=True):
        region = row[:10]
        data = region[region >= 2]
        assert len(data) == 3 and (region[region < 2] == selective_copy.BLANK).all()
        assert row[10] == selective_copy.SEP
        assert list(row[11:]) == list(data[:-1])  # teacher-forced previous outputs
        assert list(t[10:]) == list(data) and (t[:10] == -100).all()


def test_induction_heads_targets() -> None:
    cfg = _cfg(induction_heads, seq_len=12, n_symbols=5)
    trig = cfg.trigger
    seq, tgt = induction_heads.generate(cfg, 200, seed=0)
    for row, t in zip(seq, tgt, strict=True):
        where = np.flatnonzero(row == trig)
        assert len(where) == 2 and where[1] == 11 and where[0] <= 9
        assert t[-1] == row[where[0] + 1] and t[-1] != trig
        assert (t[:-1] == -100).all()


def test_parity_targets_final_and_running() -> None:
    cfg = _cfg(parity, n_bits=6)
    seq, tgt = parity.generate(cfg, 100, seed=0)
    assert (seq[:, -1] == parity.QUERY).all() and set(np.unique(seq[:, :-1])) <= {0, 1}
    assert np.array_equal(tgt[:, -1], seq[:, :-1].sum(1) % 2) and (tgt[:, :-1] == -100).all()
    run_cfg = _cfg(parity, n_bits=6, running=True)
    rseq, rtgt = parity.generate(run_cfg, 100, seed=0)
    assert np.array_equal(rseq, seq)
    for r, t in zip(rseq, rtgt, strict=True):
        acc = 0
        for pos in range(6):
            acc ^= int(r[pos])
            assert t[pos] == acc
        assert t[6] == acc


def test_flip_flop_targets() -> None:
    cfg = _cfg(flip_flop, n_instr=12, p_ignore=0.4)
    seq, tgt = flip_flop.generate(cfg, 200, seed=0)
    w, ig, r = flip_flop.WRITE, flip_flop.IGNORE, flip_flop.READ
    n_scored = n_unscored = 0
    for row, t in zip(seq, tgt, strict=True):
        assert row[0] == w and row[-4] == ig and row[-2] == r
        register = None
        for k in range(12):
            op, bit = row[2 * k], row[2 * k + 1]
            assert op in (w, ig, r) and bit in (0, 1)
            assert t[2 * k + 1] == -100
            if op == w:
                register = bit
            if op == r and row[2 * k - 2] == ig:  # only reads after an ignore are scored
                assert bit == register and t[2 * k] == register
                n_scored += 1
            else:
                assert t[2 * k] == -100
                n_unscored += op == r
    assert n_scored > 200 and n_unscored > 0  # the final read of each sequence, plus others


@pytest.mark.parametrize("name,bad", [
    ("selective_copy", {"n_tokens": 0}), ("selective_copy", {"n_tokens": 40, "region": 32}),
    ("selective_copy", {"n_data": 0}), ("selective_copy", {"steps": 0}),
    ("induction_heads", {"seq_len": 2}), ("induction_heads", {"n_symbols": 1}),
    ("induction_heads", {"batch_size": 0}), ("induction_heads", {"lr": 0.0}),
    ("parity", {"n_bits": 0}), ("parity", {"train_size": 0}), ("parity", {"running": 1}),
    ("flip_flop", {"n_instr": 2}), ("flip_flop", {"p_ignore": 1.0}),
    ("flip_flop", {"p_ignore": -0.1}), ("flip_flop", {"warmup_frac": 1.0}),
])
def test_config_rejects_bad_values(name: str, bad: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.resolve_config(name, **bad)
