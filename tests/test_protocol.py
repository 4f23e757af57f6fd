"""The shared training protocol: LR grid, early stopping on validation only, the data cache,
and the training facts every accuracy row carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import _fit, _seqtask, parity
from tasks.instruments.context import CellContext

CTX = CellContext(arch="transformer", arch_config={"d_model": 16, "n_layers": 1}, seed=0,
                  device="cpu", dtype="float32", threads=1)


@dataclass(frozen=True)
class Echo(_seqtask.TrainConfig):
    """Predict the current token: learnable in a few dozen steps at a sane LR."""

    train_size: int = 400
    val_size: int = 64
    test_size: int = 64
    steps: int = 80
    batch_size: int = 16
    warmup_frac: float = 0.0

    @property
    def vocab_size(self) -> int:
        return 8


def echo(cfg: Echo, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).integers(0, 8, (n, 6)).astype(np.int64)
    return x, x.copy()


def _data(cfg: Echo):
    return _seqtask.disjoint_splits(echo, cfg, seed=0, with_val=True)


def build():
    return CTX.build_model(vocab_size=8)


def noise(cfg: Echo, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets independent of the inputs: nothing to learn, nothing ever solved."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 8, (n, 6)).astype(np.int64), rng.integers(0, 8, (n, 6))


@pytest.mark.parametrize("search", ["grid", "halving"])
def test_lr_search_keeps_the_lr_with_the_best_validation_accuracy(search: str) -> None:
    cfg = Echo(lr_grid=(1e-6, 1e-2), search=search, solved_at=1.0)
    train, val, _ = _data(cfg)
    model, lr, fit, grid = _seqtask.fit(build, train, val, CTX, cfg)
    assert lr == 1e-2 and set(grid) == {"1e-06", "0.01"}
    assert grid["0.01"]["val_accuracy"] > 0.9 > grid["1e-06"]["val_accuracy"]
    assert fit.val_accuracy == grid["0.01"]["val_accuracy"]
    assert _seqtask.evaluate(model, val, CTX) == pytest.approx(fit.val_accuracy)
    if search == "halving":  # the loser never trains past the first rung, steps / 2
        assert grid["1e-06"]["steps_run"] == 40
        assert grid["1e-06"]["cut_at"] == 40 or grid["0.01"]["solved"]
    else:
        assert grid["1e-06"]["cut_at"] is None and grid["1e-06"]["steps_run"] == 80


@pytest.mark.parametrize("n,steps,eta,ends", [
    (1, 100, 2, [100]), (2, 100, 2, [50, 100]), (4, 1000, 2, [250, 500, 1000]),
    (3, 900, 3, [300, 900]), (5, 800, 2, [100, 200, 400, 800]),
])
def test_successive_halving_rungs(n: int, steps: int, eta: int, ends: list[int]) -> None:
    assert _fit.rungs(n, steps, eta) == ends


def test_halving_costs_at_most_two_full_runs_and_records_every_candidate() -> None:
    cfg = Echo(lr_grid=(3e-4, 1e-3, 3e-3, 1e-2), steps=40, eval_every=5)
    train, val, _ = _seqtask.disjoint_splits(noise, cfg, seed=0, with_val=True)
    _, lr, fit, grid = _seqtask.fit(build, train, val, CTX, cfg)
    spent = sum(g["steps_run"] for g in grid.values())
    assert spent == 10 * 4 + 10 * 2 + 20 * 1 == 2 * cfg.steps
    assert fit.steps_run == cfg.steps and grid[f"{lr:g}"]["cut_at"] is None
    cut = sorted(g["cut_at"] for g in grid.values() if g["cut_at"] is not None)
    assert cut == [10, 10, 20]
    for g in grid.values():  # every candidate's validation curve, one point per 5 steps
        assert [s for s, _ in g["curve"]] == list(range(5, g["steps_run"] + 1, 5))
        assert not g["solved"]


def test_a_solved_validation_ends_the_search() -> None:
    cfg = Echo(lr_grid=(1e-2, 1e-6), eval_every=5)
    train, val, _ = _data(cfg)
    _, lr, fit, grid = _seqtask.fit(build, train, val, CTX, cfg)
    assert lr == 1e-2 and fit.solved and fit.val_accuracy >= cfg.solved_at
    assert fit.steps_run < cfg.steps  # stopped at the first validation at or above solved_at
    assert grid["1e-06"]["steps_run"] == 0  # never needed


def test_a_run_trained_in_rungs_equals_one_full_run() -> None:
    """Resuming a candidate at each rung is exactly a full-budget run at its LR."""
    cfg = Echo()
    train, val, _ = _data(cfg)
    runs = []
    for pieces in ([80], [20, 40, 80]):
        run = _fit.Run(build(), train, CTX, lr=3e-3, steps=80, batch_size=16, weight_decay=0.1,
                       warmup_frac=0.1, val=val, score=lambda m, d: 0.0, eval_every=10)
        for until in pieces:
            run.advance(until)
        runs.append(run.model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_early_stopping_watches_validation_and_restores_the_best_weights() -> None:
    cfg = Echo(lr_grid=(), lr=1e-6, eval_every=5, patience=2)  # nothing improves: 3 checks
    train, val, _ = _data(cfg)
    model, _, fit, _ = _seqtask.fit(build, train, val, CTX, cfg)
    assert fit.stopped_early and fit.steps_run == 15 and fit.best_step == 5
    good = Echo(lr_grid=(), lr=1e-2, eval_every=10, solved_at=1.0)
    model, _, fit, _ = _seqtask.fit(build, train, val, CTX, good)
    assert not fit.stopped_early and (fit.steps_run == 80 or fit.solved)
    assert _seqtask.evaluate(model, val, CTX) == pytest.approx(fit.val_accuracy)


@pytest.mark.parametrize("curve,solved,expect", [
    ([(25, 0.2), (50, 0.3), (75, 0.4), (100, 0.6)], False, False),  # still climbing
    ([(25, 0.2), (50, 0.6), (75, 0.61), (100, 0.612)], False, True),  # flat at the end
    ([(25, 0.5), (50, 0.995)], True, True),  # solved half-way
])
def test_convergence_is_judged_on_the_last_quarter(curve, solved, expect) -> None:
    fit = _fit.Fit(train_loss=1.0, steps_run=curve[-1][0], val_accuracy=max(v for _, v in curve),
                   best_step=curve[-1][0], solved=solved, curve=curve)
    ok, why = _fit.converged(fit, 100)
    assert ok is expect and why


def test_data_is_cached_by_content_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    cfg = Echo()
    first, key = _seqtask.cached_splits(echo, cfg, 3, name="echo", version=1)
    assert (tmp_path / f"echo-{key}.npz").is_file()

    def refuse(*_):
        raise AssertionError("generated again instead of read from the cache")

    again, key2 = _seqtask.cached_splits(refuse, cfg, 3, name="echo", version=1)
    assert key2 == key
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # training settings share the data; data settings, seed and version do not
    assert _seqtask.data_key("echo", 1, Echo(lr=1e-4, steps=5, lr_grid=(1e-3,)), 3) == key
    assert _seqtask.data_key("echo", 1, Echo(train_size=401), 3) != key
    assert _seqtask.data_key("echo", 1, cfg, 4) != key
    assert _seqtask.data_key("echo", 2, cfg, 3) != key


def test_accuracy_rows_carry_lr_params_and_token_budget(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path))
    cfg = parity.Config(n_bits=8, train_size=150, val_size=30, test_size=60, steps=4,
                        batch_size=8, lr_grid=(1e-3, 3e-3))
    acc, loss = parity.run(cfg, CTX)
    assert acc.name == "accuracy" and acc.unit == "fraction" and acc.higher_is_better
    extra = acc.extra
    assert extra["lr"] in (1e-3, 3e-3) and extra["lr_grid"] == [1e-3, 3e-3]
    assert extra["num_params"] == CTX.build_model(vocab_size=3).num_params()
    assert extra["token_budget"] == 4 * 8 * 9 and extra["tokens_seen"] == 4 * 8 * 9
    assert extra["val_sequences"] > 0 and len(extra["data_hash"]) == 20
    assert loss.unit == "nats" and loss.higher_is_better is False


def test_three_seeds_give_a_mean_with_ci_lr_params_and_budget_on_the_site(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import db, render
    from harness.cli import main
    from tests.conftest import write_suite

    monkeypatch.setenv(_seqtask.CACHE_ENV, str(tmp_path / "cache"))
    small = {"n_bits": 8, "train_size": 150, "val_size": 30, "test_size": 60, "steps": 6,
             "batch_size": 8, "lr_grid": [1e-3, 3e-3]}
    suite = write_suite(tmp_path / "p.yaml", ["transformer"], {"parity": small},
                        seeds=[0, 1, 2])
    assert main(["--db", db_url, "run", "--suite", str(suite), "--no-progress"]) == 0
    engine = db.connect(db_url)
    (mean,) = [d for d in db.derived(engine)
               if d["kind"] == "seed_mean" and d["metric"] == "accuracy"]
    p = mean["points"]
    assert p["n_seeds"] == 3 and p["ci_low"] <= mean["value"] <= p["ci_high"]
    assert len(p["chosen_lrs"]) == 3 and set(p["chosen_lrs"]) <= {1e-3, 3e-3}
    assert p["lr_grid"] == [1e-3, 3e-3] and p["token_budget"] == 6 * 8 * 9
    assert p["num_params"] > 0
    html = render.build(engine, tmp_path / "site").read_text()
    assert "(n=3)" in html and "chosen LR" in html and "training tokens" in html


def test_candidates_tied_on_validation_go_on_smallest_lr_first() -> None:
    cfg = Echo()
    train, val, _ = _data(cfg)

    def run(lr: float, score: float) -> _fit.Run:
        r = _fit.Run(build(), train, CTX, lr=lr, steps=10, batch_size=4, weight_decay=0.0,
                     warmup_frac=0.0, val=val, score=lambda m, d: score, eval_every=5)
        r.best = (score, 5, {})
        return r

    runs = {1e-2: run(1e-2, 0.50), 3e-3: run(3e-3, 0.51), 1e-3: run(1e-3, 0.30),
            3e-4: run(3e-4, 0.80)}
    # 0.80 leads alone; 0.50 and 0.51 are not within TIE of it, so score order holds
    assert _fit.ranked(runs, list(runs)) == [3e-4, 3e-3, 1e-2, 1e-3]
    runs[3e-4].best = (0.515, 5, {})  # now 0.50, 0.51 and 0.515 tie: smallest LR first
    assert _fit.ranked(runs, list(runs)) == [3e-4, 3e-3, 1e-2, 1e-3]
    runs[1e-3].best = (0.505, 5, {})
    assert _fit.ranked(runs, list(runs)) == [3e-4, 1e-3, 3e-3, 1e-2]
