"""Byte-level LM task: corpus identity, contiguous splits, deduplication of held-out bytes
against the training text, the scoring windows, the bits-per-byte figure with its chance and
floor, and one trained checkpoint shared with the lm_eval and efficiency tasks through the
runner."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks
from architectures.configs import ConfigError
from harness import db
from harness.cli import main
from tasks import lm_bpb
from tasks.instruments import checkpoints
from tasks.instruments.context import CellContext
from tests.conftest import write_suite

CTX = CellContext(arch="transformer", arch_config={"d_model": 32, "n_layers": 1}, seed=0,
                  device="cpu", dtype="float32", threads=1)


@pytest.mark.parametrize("corpus", lm_bpb.CORPORA)
def test_corpus_is_real_text_and_split_contiguously(corpus: str) -> None:
    raw = lm_bpb.corpus_bytes(corpus)
    assert len(raw) > 100_000 and raw.decode("utf-8")  # real, decodable text
    train, val, test = lm_bpb.splits(corpus)
    assert np.concatenate([train, val, test]).tobytes() == raw  # disjoint and complete
    assert len(train) > 15 * len(test) and len(val) > 1000 and len(test) > 1000


def test_windows_predict_the_next_byte() -> None:
    data = np.arange(50, dtype=np.uint8)
    x, y = lm_bpb.windows(data, seq_len=8, stride=4)
    assert x.shape == y.shape and x.shape[1] == 8 and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(y[:, -1], x[:, -1] + 1)
    assert x[1, 0] == 4 and y[-1, -1] < 50


def brute_contaminated(train: bytes, text: bytes, p: int, n: int) -> bool:
    """Is ``text[p]`` inside an ``n``-byte window of ``text`` that occurs verbatim in ``train``?
    Every such window is searched for with ``bytes.find`` (no n-gram table)."""
    return any(train.find(text[q : q + n]) >= 0
               for q in range(max(0, p - n + 1), min(p, len(text) - n) + 1))


def test_matches_of_a_synthetic_text_are_found_exactly() -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, 2000, dtype=np.uint8)
    text = rng.integers(0, 256, 300, dtype=np.uint8)
    text[50:90] = train[100:140]  # a 40-byte match
    text[150:181] = train[500:531]  # 31 bytes: one short of a match
    text[200:232] = train[900:932]  # exactly 32
    text[268:300] = train[0:32]  # at the very end
    want = np.zeros(300, dtype=bool)
    want[50:90] = want[200:232] = want[268:300] = True
    grams = np.unique(lm_bpb.ngrams(train, 32))
    assert np.array_equal(lm_bpb.match_mask(text, grams, 32), want)
    t, x = train.tobytes(), text.tobytes()
    assert [p for p in range(300) if brute_contaminated(t, x, p, 32)] == list(np.flatnonzero(want))
    positions = np.arange(40, 100)  # 40 of these 60 bytes are inside the first match
    assert lm_bpb.recheck_contamination(t, x, positions, 32) == pytest.approx(40 / 60)
    assert lm_bpb.recheck_contamination(t, x, np.arange(140, 200), 32) == 0.0


def test_eval_windows_tile_the_split_with_min_context() -> None:
    data = (np.arange(300) % 251).astype(np.uint8)
    drop = np.zeros(300, dtype=bool)
    drop[[100, 101, 299]] = True
    x, y, pos = lm_bpb.eval_windows(data, seq_len=32, min_context=10, drop=drop)
    assert x.shape == y.shape == pos.shape and x.shape[1] == 32
    assert np.array_equal(x, data[pos - 1]) and np.array_equal(pos[:, 1:], pos[:, :-1] + 1)
    scored = y != lm_bpb.IGNORE
    assert np.array_equal(y[scored], data[pos[scored]])
    context = np.broadcast_to(np.arange(1, 33), y.shape)  # bytes before each target in its window
    assert context[scored].min() >= 10
    # every byte from min_context on is scored exactly once, except the dropped ones
    assert sorted(pos[scored].tolist()) == [p for p in range(10, 300) if not drop[p]]


def test_eval_bytes_keeps_the_first_scored_bytes_and_refuses_too_many() -> None:
    train = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 20, dtype=np.uint8)
    text = np.frombuffer(bytes(range(200)) + b"the quick brown fox jumps over the lazy dog. "
                         + bytes(range(150)), dtype=np.uint8)
    cfg = lm_bpb.Config(seq_len=32, min_context=8, dedup_len=16)
    grams = np.unique(lm_bpb.ngrams(train, 16))
    (_, y), pos, facts = lm_bpb.held_out(text, grams, cfg)
    assert not set(pos[y != lm_bpb.IGNORE].tolist()) & set(range(200, 245))
    assert facts["bytes_dropped"] == 45 and facts["bytes_scored"] == len(text) - 8 - 45
    assert facts["contamination_before"] == pytest.approx(45 / (len(text) - 8))
    (_, y), pos, facts = lm_bpb.held_out(text, grams, cfg, limit=100)
    assert facts["bytes_scored"] == 100 and (y != lm_bpb.IGNORE).sum() == 100
    assert pos[y != lm_bpb.IGNORE].max() == 107  # bytes 8 .. 107
    with pytest.raises(ValueError, match="eval_bytes 1000 but only 342 test bytes"):
        lm_bpb.held_out(text, grams, cfg, limit=1000)


@pytest.mark.parametrize("corpus", lm_bpb.CORPORA)
def test_scored_test_bytes_are_not_training_text(corpus: str) -> None:
    """Recomputed independently of match_mask: for a sample of scored bytes, every 32-byte
    window of the test text containing one is searched for in the training bytes."""
    cfg = lm_bpb.Config(corpus=corpus)
    train, _, test = lm_bpb.splits(corpus)
    (x, y), pos, facts = lm_bpb.held_out(test, np.unique(lm_bpb.ngrams(train, 32)), cfg)
    scored = pos[y != lm_bpb.IGNORE]
    assert facts["bytes_scored"] == len(scored) > 10_000
    rng = np.random.default_rng(0)
    t, s = train.tobytes(), test.tobytes()
    sample = rng.choice(scored, 150, replace=False)
    bad = sum(brute_contaminated(t, s, int(p), 32) for p in sample)
    assert bad / len(sample) <= 0.01
    # and the dropped bytes really were contaminated (deduplication is not just dropping text)
    dropped = np.setdiff1d(np.arange(cfg.min_context, len(test)), scored)
    assert all(brute_contaminated(t, s, int(p), 32) for p in rng.choice(dropped, 50))
    assert facts["contamination_before"] == pytest.approx(len(dropped) / (len(test) - 64))
    if corpus == "pydoc_topics":  # the repeated passages the issue measured
        assert facts["contamination_before"] > 0.2


def test_unigram_floor_is_add_one_smoothed_training_frequencies() -> None:
    train = np.array([0, 0, 1], dtype=np.uint8)
    targets = np.array([[0, lm_bpb.IGNORE, 1]])
    want = (-math.log2(3 / 259) - math.log2(2 / 259)) / 2
    assert lm_bpb.unigram_bpb(train, targets) == pytest.approx(want)


class Uniform(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x.shape, 256)


class Oracle(torch.nn.Module):
    """Puts almost all mass on the true next byte (it knows the data: x + 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((*x.shape, 256), -30.0)
        out.scatter_(-1, ((x + 1) % 256).unsqueeze(-1), 30.0)
        return out


def test_bits_per_byte_of_a_uniform_model_is_eight_and_of_an_oracle_near_zero() -> None:
    x, y = lm_bpb.windows(np.arange(200, dtype=np.uint8), seq_len=16, stride=16)
    assert lm_bpb.bits_per_byte(Uniform(), (x, y), CTX) == pytest.approx(8.0, abs=1e-5)
    assert lm_bpb.bits_per_byte(Oracle(), (x, y), CTX) < 1e-6
    wrong = y.copy()
    wrong[:, ::2] = (wrong[:, ::2] + 7) % 256  # the oracle misses these: 30+ bits each
    assert lm_bpb.bits_per_byte(Oracle(), (x, wrong), CTX) > 30
    wrong[:, ::2] = lm_bpb.IGNORE  # masked out, they no longer count
    assert lm_bpb.bits_per_byte(Oracle(), (x, wrong), CTX) < 1e-6
    with pytest.raises(ValueError, match="nothing to score"):
        lm_bpb.bits_per_byte(Oracle(), (x, np.full_like(y, lm_bpb.IGNORE)), CTX)


@pytest.mark.parametrize("bad", [{"corpus": "wikipedia"}, {"seq_len": 1}, {"eval_bytes": -1},
                                 {"lr_grid": [0.001, -1.0]}, {"dedup_len": 0},
                                 {"min_context": 0}, {"min_context": 128},
                                 {"seq_len": 32, "min_context": 64}])
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ConfigError) as err:
        tasks.resolve_config("lm_bpb", **bad)
    assert "\n" not in str(err.value)


def test_lm_eval_without_the_producer_checkpoint_says_what_to_run(tmp_path: Path) -> None:
    from tasks import lm_eval

    cfg = lm_eval.Config(checkpoint="task:lm_bpb")
    ctx = CellContext(**{**CTX.__dict__, "checkpoint_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="no lm_bpb checkpoint for transformer.*run the lm_bpb"):
        lm_eval.checkpoint_path(cfg, ctx)


@pytest.mark.slow
def test_lm_bpb_checkpoint_is_shared_with_lm_eval_through_the_runner(tmp_path: Path,
                                                                     db_url: str) -> None:
    suite = write_suite(tmp_path / "lm.yaml", ["transformer"], {
        "lm_bpb": {"steps": 4, "batch_size": 4, "seq_len": 32, "eval_bytes": 640,
                   "min_context": 16},
        "lm_eval": {"tasks": ["archbench_capitals"], "checkpoint": "task:lm_bpb", "limit": 2},
        "prefill_latency": {"checkpoint": "task:lm_bpb", "seq_len": 16, "n_samples": 3,
                            "warmup": 1, "min_sample_s": 0.001, "max_total_s": 1.0},
    })
    ckpt_dir = tmp_path / "ckpt"
    assert main(["--db", db_url, "run", "--suite", str(suite), "--no-progress",
                 "--checkpoints", str(ckpt_dir)]) == 0
    rows = db.results(db.connect(db_url))
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows]
    bpb = next(r for r in rows if r["metric"] == "bpb")
    extra = bpb["extra"]
    assert bpb["unit"] == "bits/byte" and bpb["higher_is_better"] is False
    assert 0 < bpb["value"] < 12 and math.isfinite(bpb["value"])
    raw = lm_bpb.corpus_bytes("pydoc_topics")
    assert extra["corpus_sha256"] == hashlib.sha256(raw).hexdigest()
    assert extra["token_budget"] == 4 * 4 * 32 and extra["lr"] in extra["lr_grid"]
    assert extra["num_params"] > 0 and extra["test_bytes_scored"] == 640
    # deduplicated: contamination recomputed on the scored bytes, chance and unigram floor
    assert extra["contamination"] <= 0.01 and extra["contamination_before"] > 0
    assert extra["dedup_len"] == 32 and extra["min_context"] == 16
    assert extra["test_bytes_dropped"] > 0 and extra["val_bytes_scored"] > 0
    assert extra["chance"] == 8.0 and 3 < extra["floor"] < 8
    assert "unigram" in extra["floor_strategy"]
    # the lm_eval cell read the very file the lm_bpb cell wrote, and that file names its cell
    path = Path(extra["checkpoint"])
    assert path.is_file() and path.is_relative_to(ckpt_dir)
    assert checkpoints.read_metadata(path)["cell_id"] == bpb["cell_id"]
    for task in ("lm_eval", "prefill_latency"):  # one trained model, no retraining
        users = [r for r in rows if r["task"] == task]
        assert users and {r["extra"]["checkpoint"] for r in users} == {str(path)}, task
    # lm_eval reads the context length the checkpoint was trained on
    assert checkpoints.read_metadata(path)["extra"]["seq_len"] == 32
    assert {r["extra"]["max_length"] for r in rows if r["task"] == "lm_eval"} == {32}
