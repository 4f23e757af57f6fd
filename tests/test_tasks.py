"""Tasks: registry contract, MQAR data, and the Metric rules every task relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import architectures
import tasks
from harness.configs import ConfigError, build_config
from harness.context import CellContext
from tasks import mqar
from tasks.base import Metric


@pytest.mark.parametrize("name", tasks.names())
def test_task_contract(name: str) -> None:
    task = tasks.get(name)
    assert task.kind in ("accuracy", "efficiency")
    assert isinstance(task.version, int) and task.doc.strip()
    assert tasks.resolve_config(name)  # defaults are valid
    with pytest.raises(ConfigError, match="allowed"):
        tasks.resolve_config(name, no_such_key=1)


def test_mqar_generation_is_deterministic_and_splits_disjoint() -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 2, "n_keys": 3, "train_size": 2000,
                                     "test_size": 500}, "mqar")
    (x1, y1), (t1, u1) = mqar.splits(cfg, seed=3)
    (x2, y2), (t2, u2) = mqar.splits(cfg, seed=3)
    assert np.array_equal(x1, x2) and np.array_equal(t1, t2) and np.array_equal(u1, u2)
    (x3, _), _ = mqar.splits(cfg, seed=4)
    assert not np.array_equal(x1, x3)
    train_rows = {r.tobytes() for r in x1}
    assert not any(r.tobytes() in train_rows for r in t1)
    assert len(t1) < 500  # 108 possible sequences: duplicates occur and were dropped


def test_mqar_targets_are_the_bound_values() -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 3, "n_keys": 10}, "mqar")
    seq, targets = mqar.generate(cfg, 50, seed=0)
    assert seq.shape == (50, cfg.seq_len)
    for row, tgt in zip(seq, targets, strict=True):
        bound = dict(zip(row[0:6:2], row[1:6:2], strict=True))
        assert len(bound) == 3  # keys are distinct
        assert sorted(row[6:]) == sorted(bound)  # every key is queried once
        for pos in range(6, 9):
            assert tgt[pos] == bound[row[pos]]
        assert (tgt[:6] == -100).all()


def test_metric_non_finite_becomes_failed() -> None:
    m = Metric(name="accuracy", unit="fraction", value=math.nan)
    assert m.status == "failed" and m.value is None and "non-finite" in m.error
    with pytest.raises(ValueError):
        Metric(name="x", unit="", value=1.0, status="great")


@pytest.mark.parametrize("name", [n for n in architectures.names()
                                  if architectures.get(n).causal])
def test_mqar_score_does_not_move_with_eval_batch_size(name: str) -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 4, "n_keys": 16, "test_size": 48}, "mqar")
    ctx = CellContext(arch=name, arch_config={"d_model": 32, "n_layers": 2}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    model = ctx.build_model(vocab_size=cfg.vocab_size)
    _, (x, y) = mqar.splits(cfg, seed=0)
    scores = {b: mqar.evaluate(model, (x, y), ctx, batch_size=b) for b in (1, 7, 48)}
    assert len(set(scores.values())) == 1, scores
    # the score could agree by luck (e.g. 0 for an untrained model): compare the predictions
    with torch.inference_mode():
        preds = {b: torch.cat([model(torch.from_numpy(x[i : i + b])).argmax(-1)
                               for i in range(0, len(x), b)]) for b in (1, 7, 48)}
    assert torch.equal(preds[1], preds[7]) and torch.equal(preds[1], preds[48])
