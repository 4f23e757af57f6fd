"""Tasks permutation, icl_regression and copy_length_gen: seeded data, disjoint splits, exact
targets, config checks, and one tiny end-to-end run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tasks
from architectures.configs import ConfigError, build_config
from tasks import copy_length_gen, icl_regression, permutation
from tasks.instruments.context import CellContext

SMALL = {"train_size": 300, "val_size": 64, "test_size": 100}


def _cfg(mod, **over):
    return build_config(mod.Config, {**SMALL, **over}, mod.__name__)





def _compose(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """``a o b``: apply b, then a."""
    return tuple(a[b[j]] for j in range(len(b)))


@pytest.mark.parametrize("group,k", [("S3", 3), ("S5", 5)])
def test_permutation_targets_are_prefix_products(group: str, k: int) -> None:
    elems = list(itertools.permutations(range(k)))
    assert permutation.ELEMENTS[group] == tuple(elems) and elems[0] == tuple(range(k))
    cfg = _cfg(permutation, group=group, length=12)
    assert cfg.vocab_size == len(elems)
    seq, tgt = permutation.generate(cfg, 100, seed=0)
    for row, t in zip(seq, tgt, strict=True):
        state = tuple(range(k))  # identity
        for pos in range(12):
            state = _compose(elems[row[pos]], state)  # earlier elements act first
            assert t[pos] == elems.index(state)
    # the convention on a non-commuting pair: swap(0 1) then swap(1 2) sends 0->2, 1->0, 2->1
    a, b = elems.index((1, 0) + tuple(range(2, k))), elems.index((0, 2, 1) + tuple(range(3, k)))
    assert permutation.MUL[group][b, a] == elems.index((2, 0, 1) + tuple(range(3, k)))
    assert permutation.MUL[group][a, b] != permutation.MUL[group][b, a]

def test_icl_regression_targets_follow_the_line_of_the_first_two_examples() -> None:
    p = 7
    cfg = _cfg(icl_regression, p=p, n_examples=8, skip=2)
    seq, tgt = icl_regression.generate(cfg, 300, seed=0)
    x, y = seq[:, 0::2], seq[:, 1::2] - p
    assert x.max() < p and y.min() >= 0 and y.max() < p
    assert (x[:, 0] != x[:, 1]).all()  # the first two examples determine the line
    for xs, ys, t in zip(x, y, tgt, strict=True):
        w = (ys[1] - ys[0]) * pow(int(xs[1] - xs[0]), -1, p) % p
        b = (ys[0] - w * xs[0]) % p
        assert 1 <= w < p
        assert np.array_equal(ys, (w * xs + b) % p)
        assert (t[1::2] == -100).all() and (t[0:4] == -100).all()
        for k in range(2, 8):  # scored: each x not seen earlier in the sequence
            new = xs[k] not in xs[:k]
            assert t[2 * k] == (p + ys[k] if new else -100)
    assert len({(r[1] - r[0], r[3] - r[2]) for r in seq[:, :4].tolist()}) > 10  # lines vary


def test_copy_length_gen_targets() -> None:
    cfg = _cfg(copy_length_gen, n_symbols=5, min_len=2, train_max_len=6, test_max_len=9)
    rng = np.random.default_rng(0)
    seq, tgt = copy_length_gen.draw(cfg, rng, 200, 2, 9)
    assert seq.shape == tgt.shape == (200, 19)
    lengths = set()
    for row, t in zip(seq, tgt, strict=True):
        n = int(np.flatnonzero(row == cfg.sep)[0])
        lengths.add(n)
        s = row[:n]
        assert 2 <= n <= 9 and (s < cfg.n_symbols).all()
        assert np.array_equal(row[n + 1 : 2 * n + 1], s)  # teacher-forced copy
        assert (row[2 * n + 1 :] == cfg.pad).all() and (row != cfg.eos).all()
        assert (t[:n] == -100).all() and (t[2 * n + 1 :] == -100).all()
        assert np.array_equal(t[n : 2 * n], s) and t[2 * n] == cfg.eos
    assert lengths == set(range(2, 10))


def test_copy_length_gen_splits_disjoint_and_test_strings_longer() -> None:
    cfg = _cfg(copy_length_gen, n_symbols=3, min_len=2, train_max_len=5, test_max_len=8)
    train, val, test_in, test_long = copy_length_gen.splits(cfg, seed=1)
    assert train[0].shape[1] == val[0].shape[1] == test_in[0].shape[1] == cfg.seq_len == 11
    assert test_long[0].shape[1] == cfg.test_seq_len == 17
    rows = [{r.tobytes() for r in s[0]} for s in (train, val, test_in)]
    assert not rows[0] & rows[1] and not (rows[0] | rows[1]) & rows[2]
    assert len(val[0]) > 0 and len(test_in[0]) > 0 and len(test_long[0]) == 100

    def lengths(data):
        return np.argmax(data[0] == cfg.sep, axis=1)

    assert lengths(test_long).min() > max(lengths(train).max(), lengths(val).max())
    assert lengths(test_long).min() == 6 and lengths(test_long).max() == 8
    assert lengths(test_in).max() <= 5 and lengths(train).min() == 2
    again = copy_length_gen.splits(cfg, seed=1)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, (train, val, test_in, test_long),
                                                          strict=True))


@pytest.mark.parametrize("name,bad", [
    ("permutation", {"group": "S4"}), ("permutation", {"group": "s3"}),
    ("permutation", {"length": 0}), ("permutation", {"steps": 0}),
    ("icl_regression", {"p": 9}), ("icl_regression", {"p": 1}), ("icl_regression", {"p": 0}),
    ("icl_regression", {"n_examples": 1}), ("icl_regression", {"skip": 16}),
    ("icl_regression", {"skip": -1}), ("icl_regression", {"lr": 0.0}),
    ("copy_length_gen", {"test_max_len": 16}), ("copy_length_gen", {"test_max_len": 8}),
    ("copy_length_gen", {"min_len": 0}), ("copy_length_gen", {"min_len": 17}),
    ("copy_length_gen", {"n_symbols": 1}), ("copy_length_gen", {"batch_size": 0}),
])
def test_config_rejects_bad_values(name: str, bad: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.resolve_config(name, **bad)


def test_permutation_bad_group_message_lists_the_groups() -> None:
    with pytest.raises(ConfigError, match="S3, S5"):
        tasks.resolve_config("permutation", group="S4")


def test_copy_length_gen_tiny_run_reports_both_accuracies() -> None:
    cfg = _cfg(copy_length_gen, n_symbols=4, min_len=2, train_max_len=4, test_max_len=6,
               steps=5, batch_size=8)
    ctx = CellContext(arch="transformer", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    rows = {m.name: m for m in copy_length_gen.run(cfg, ctx)}
    declared = {m.name: m for m in tasks.get("copy_length_gen").metrics}
    assert set(rows) == set(declared)
    for m in rows.values():
        assert (m.unit, m.higher_is_better) == (declared[m.name].unit,
                                                declared[m.name].higher_is_better)
    for name in ("accuracy", "accuracy_in_range"):
        m = rows[name]
        assert m.status == "ok" and m.unit == "fraction" and m.higher_is_better is True
        assert 0.0 <= m.value <= 1.0 and m.n_samples > 0
        assert m.extra["lr"] in cfg.lr_grid and m.extra["num_params"] > 0
    extra = rows["accuracy"].extra
    assert extra["seq_len"] == 9 and extra["test_seq_len"] == 13 and extra["steps_run"] == 5
    assert "longer than any trained on" in rows["accuracy"].method
