"""The shared training protocol: LR grid, early stopping on validation only, the data cache,
and the training facts every accuracy row carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.context import CellContext
from tasks import _seqtask, parity

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


def test_lr_grid_keeps_the_lr_with_the_best_validation_accuracy() -> None:
    cfg = Echo(lr_grid=(1e-6, 1e-2))
    train, val, _ = _data(cfg)
    model, lr, fit, grid = _seqtask.fit(build, train, val, CTX, cfg)
    assert lr == 1e-2 and set(grid) == {"1e-06", "0.01"}
    assert grid["0.01"]["val_accuracy"] > 0.9 > grid["1e-06"]["val_accuracy"]
    assert fit.val_accuracy == grid["0.01"]["val_accuracy"]
    assert _seqtask.evaluate(model, val, CTX) == pytest.approx(fit.val_accuracy)


def test_early_stopping_watches_validation_and_restores_the_best_weights() -> None:
    cfg = Echo(lr=1e-6, eval_every=5, patience=2)  # nothing improves: stop after 3 checks
    train, val, _ = _data(cfg)
    model, _, fit, _ = _seqtask.fit(build, train, val, CTX, cfg)
    assert fit.stopped_early and fit.steps_run == 15 and fit.best_step == 5
    good = Echo(lr=1e-2, eval_every=10)
    model, _, fit, _ = _seqtask.fit(build, train, val, CTX, good)
    assert not fit.stopped_early and fit.steps_run == 80
    assert _seqtask.evaluate(model, val, CTX) == pytest.approx(fit.val_accuracy)


@pytest.mark.parametrize("bad,match", [
    ({"lr_grid": (1e-3, 3e-3), "val_size": 0}, "val_size"),
    ({"eval_every": 5, "val_size": 0}, "val_size"),
    ({"patience": 3}, "patience needs eval_every"),
    ({"lr_grid": (0.0,)}, "lr_grid"),
])
def test_protocol_settings_are_checked(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Echo(**bad).validate()


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
