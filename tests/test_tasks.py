"""Tasks: registry contract, MQAR data, and the Metric rules every task relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import architectures
import tasks
from architectures.configs import ConfigError, build_config
from tasks import _seqtask, mqar
from tasks.base import Metric, MetricSpec
from tasks.instruments.context import CellContext


@pytest.mark.parametrize("name", tasks.names())
def test_task_contract(name: str) -> None:
    task = tasks.get(name)
    assert task.kind in ("accuracy", "efficiency")
    assert isinstance(task.version, int) and task.doc.strip()
    assert tasks.resolve_config(name)  # defaults are valid
    with pytest.raises(ConfigError, match="allowed"):
        tasks.resolve_config(name, no_such_key=1)


def test_mqar_generation_is_deterministic_and_splits_disjoint() -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 2, "n_keys": 3, "seq_len": 6,
                                     "train_size": 2000, "test_size": 500}, "mqar")
    (x1, y1), (t1, u1) = mqar.splits(cfg, seed=3)
    (x2, y2), (t2, u2) = mqar.splits(cfg, seed=3)
    assert np.array_equal(x1, x2) and np.array_equal(t1, t2) and np.array_equal(u1, u2)
    (x3, _), _ = mqar.splits(cfg, seed=4)
    assert not np.array_equal(x1, x3)
    train_rows = {r.tobytes() for r in x1}
    assert not any(r.tobytes() in train_rows for r in t1)
    assert len(t1) < 500  # 108 possible sequences: duplicates occur and were dropped


def test_mqar_targets_are_the_bound_values() -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 3, "n_keys": 10, "seq_len": 9}, "mqar")
    seq, targets = mqar.generate(cfg, 50, seed=0)  # no room for filler: queries at 6, 7, 8
    assert seq.shape == (50, cfg.seq_len)
    for row, tgt in zip(seq, targets, strict=True):
        bound = dict(zip(row[0:6:2], row[1:6:2], strict=True))
        assert len(bound) == 3  # keys are distinct
        assert sorted(row[6:]) == sorted(bound)  # every key is queried once
        for pos in range(6, 9):
            assert tgt[pos] == bound[row[pos]]
        assert (tgt[:6] == -100).all()


def _small(name: str) -> dict:
    """d_model 32, two layers, less what the variant fixes (looped is one shared block)."""
    fixed = architectures.fixed_keys(name)
    return {k: v for k, v in {"d_model": 32, "n_layers": 2}.items() if k not in fixed}


def test_metric_non_finite_becomes_failed() -> None:
    m = Metric(name="accuracy", unit="fraction", value=math.nan)
    assert m.status == "failed" and m.value is None and "non-finite" in m.error
    with pytest.raises(ValueError):
        Metric(name="x", unit="", value=1.0, status="great")


@pytest.mark.parametrize("name", [n for n in architectures.names()
                                  if architectures.get(n).causal])
def test_mqar_score_does_not_move_with_eval_batch_size(name: str) -> None:
    cfg = build_config(mqar.Config, {"n_pairs": 4, "n_keys": 16, "seq_len": 16,
                                     "test_size": 48}, "mqar")
    ctx = CellContext(arch=name, arch_config=_small(name), seed=0,
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


def _mixed_length_mqar() -> tuple[np.ndarray, np.ndarray, list[np.ndarray], int]:
    """MQAR rows of 2, 3 and 4 pairs (T 6, 9, 12) interleaved, right-padded with a PAD token."""
    rows, targets = [], []
    for n_pairs in (2, 3, 4):
        cfg = build_config(mqar.Config, {"n_pairs": n_pairs, "n_keys": 16,
                                         "seq_len": 3 * n_pairs}, "mqar")
        x, y = mqar.generate(cfg, 10, seed=n_pairs)
        rows += list(x)
        targets += list(y)
    order = np.random.default_rng(0).permutation(len(rows))
    rows, targets = [rows[i] for i in order], [targets[i] for i in order]
    pad = cfg.vocab_size  # one past the last MQAR token
    x, _ = _seqtask.pad_rows(rows, pad, "right")
    y, _ = _seqtask.pad_rows(targets, -100, "right")
    return x, y, rows, pad


@pytest.mark.parametrize("name", [n for n in architectures.names()
                                  if architectures.get(n).causal])
def test_mqar_score_does_not_move_with_padding_side(name: str) -> None:
    """Mixed-length MQAR, scored with right and left padding at several batch sizes: the same
    score, and every row's logits equal those of the row run alone, unpadded."""
    x, y, rows, pad = _mixed_length_mqar()
    ctx = CellContext(arch=name, arch_config=_small(name), seed=0,
                      device="cpu", dtype="float32", threads=1)
    model = ctx.build_model(vocab_size=pad + 1)
    scores = {(side, b): _seqtask.evaluate(model, (x, y), ctx, batch_size=b,
                                           padding_side=side, pad=pad)
              for side in _seqtask.PADDING_SIDES for b in (1, 7, 30)}
    assert len(set(scores.values())) == 1, scores
    with torch.inference_mode():
        alone = [model(torch.from_numpy(r)[None])[0] for r in rows]
        for side in _seqtask.PADDING_SIDES:
            batch, lengths = _seqtask.pad_rows(rows, pad, side)
            logits = _seqtask.forward_padded(model, torch.from_numpy(batch),
                                             torch.from_numpy(lengths), side)
            width = batch.shape[1]
            for i, ref in enumerate(alone):
                got = logits[i, : len(ref)] if side == "right" else logits[i, width - len(ref) :]
                torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["lstm", "mamba", "transformer"])
def test_naive_left_padding_would_leak_into_the_scores(name: str) -> None:
    """The control for the test above: fed straight to the model, left pads reach the real
    tokens through the recurrent state or attention, so the invariance is not automatic."""
    _, _, rows, pad = _mixed_length_mqar()
    ctx = CellContext(arch=name, arch_config=_small(name), seed=0,
                      device="cpu", dtype="float32", threads=1)
    model = ctx.build_model(vocab_size=pad + 1)
    batch, _ = _seqtask.pad_rows(rows, pad, "left")
    short = next(i for i, r in enumerate(rows) if len(r) < batch.shape[1])
    with torch.inference_mode():
        naive = model(torch.from_numpy(batch))[short, batch.shape[1] - len(rows[short]) :]
        alone = model(torch.from_numpy(rows[short])[None])[0]
    assert (naive - alone).abs().max() > 1e-3


TINY_TRAINING = {"train_size": 200, "val_size": 20, "test_size": 40, "steps": 2,
                 "batch_size": 4}
ACCURACY_TASKS = [n for n in tasks.names() if tasks.get(n).kind == "accuracy"]


@pytest.mark.parametrize("name", ACCURACY_TASKS)
def test_accuracy_task_reports_exactly_the_metrics_it_declares(
        name: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = tasks.get(name)
    if name == "lm_eval":  # its metrics are lm-eval's own, named <task>/<metric>
        assert not task.metrics
        return
    declared = {m.name: m for m in task.metrics}
    assert task.headline in declared and all(m.unit and m.doc for m in task.metrics)
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    over = {k: v for k, v in TINY_TRAINING.items() if k in tasks.config_keys(name)}
    if name == "lm_bpb":
        over.update(seq_len=16, min_context=8, eval_bytes=256, save_checkpoint=False)
    cfg = build_config(task.config_cls, over, name)
    ctx = CellContext(arch="lstm", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                      device="cpu", dtype="float32", threads=1)
    got = task.run(cfg, ctx)
    assert {m.name for m in got} == set(declared)
    assert ctx.kernel_path == "aten_lstm"  # the model it trained, recorded by the context
    assert not any("kernel_path" in m.extra for m in got)  # the cell adds it, not the task
    for m in got:
        assert m.status == "ok" and m.unit == declared[m.name].unit
        assert m.higher_is_better is declared[m.name].higher_is_better
        assert m.extra["num_params"] > 0 and m.extra["token_budget"] > 0 and "lr" in m.extra
        if m.name == task.headline or m.unit == "fraction":  # every accuracy row's baselines
            assert m.extra["chance"] is not None and m.extra["floor"] is not None, m.name
            assert m.extra["floor_strategy"], m.name


def test_context_records_the_kernel_path_of_what_it_builds() -> None:
    ctx = CellContext(arch="transformer", arch_config={"d_model": 16, "n_layers": 1},
                      seed=0, device="cpu", dtype="float32", threads=1)
    model = ctx.build_model()
    assert ctx._kernel_path == model.kernel_path == ctx.kernel_path


@pytest.mark.parametrize("arch", architectures.names())
def test_context_reads_the_kernel_path_on_meta_when_nothing_was_built(arch: str) -> None:
    """A timed task builds its model in a forked child: the parent's context still knows the
    kernel path, from a model built on the meta device, without touching the global RNG."""
    ctx = CellContext(arch=arch, arch_config={}, seed=0, device="cpu", dtype="float32",
                      threads=1)
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    path = ctx.kernel_path
    assert torch.equal(torch.random.get_rng_state(), before)
    assert path == ctx.build_model().kernel_path


def test_metric_spec_makes_its_rows() -> None:
    spec = MetricSpec("latency_ms", "ms", False, "doc")
    row = spec.metric(1.5, method="m", n_samples=3, extra={"a": 1})
    assert row == Metric(name="latency_ms", unit="ms", value=1.5, higher_is_better=False,
                         method="m", n_samples=3, extra={"a": 1})
    assert spec.metric(None, status="unavailable", error="why").status == "unavailable"


@pytest.mark.parametrize("name", [n for n in tasks.names()
                                  if tasks.get(n).metrics == _seqtask.METRICS])
def test_generated_tasks_are_registered_under_the_name_they_give_once(name: str) -> None:
    task = tasks.get(name)
    assert task.kind == "accuracy" and task.headline == "accuracy"
    module = __import__(f"tasks.{name}", fromlist=["TASK"])
    if hasattr(module, "problem"):  # built by register_generated
        assert module.TASK is task and module.run is task.run
        problem = module.problem(build_config(task.config_cls, {}, name))
        assert isinstance(problem, _seqtask.Problem) and problem.vocab_size > 0


# The resolved config's keys, in order, are hashed into a cell's id: TimingConfig must not
# move a timed task's keys.
TIMED_KEYS = {
    "prefill_latency": ["ci_target", "max_samples", "max_attempts", "processes", "batch_size",
                        "seq_len", "n_samples", "warmup", "min_sample_s", "max_total_s",
                        "checkpoint"],
    "decode_latency": ["ci_target", "max_samples", "max_attempts", "processes", "context_len",
                       "batch_size", "n_samples", "warmup", "min_sample_s", "max_total_s",
                       "checkpoint"],
    "train_step_latency": ["ci_target", "max_samples", "max_attempts", "processes",
                           "batch_size", "seq_len", "lr", "n_samples", "warmup",
                           "min_sample_s", "max_total_s", "checkpoint"],
}


@pytest.mark.parametrize("name", sorted(TIMED_KEYS))
def test_timed_configs_keep_their_key_order(name: str) -> None:
    assert list(tasks.resolve_config(name)) == TIMED_KEYS[name]
