"""Byte-level LM task: corpus identity, contiguous splits, the bits-per-byte figure, and one
trained checkpoint shared with the lm_eval and efficiency tasks through the runner."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks
from harness import checkpoints, db
from harness.cli import main
from harness.configs import ConfigError
from harness.context import CellContext
from tasks import lm_bpb
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


@pytest.mark.parametrize("bad", [{"corpus": "wikipedia"}, {"seq_len": 1}, {"eval_bytes": -1},
                                 {"lr_grid": [0.001, -1.0]}])
def test_bad_config_is_refused(bad: dict) -> None:
    with pytest.raises(ConfigError):
        tasks.resolve_config("lm_bpb", **bad)


def test_lm_eval_without_the_producer_checkpoint_says_what_to_run(tmp_path: Path) -> None:
    from tasks import lm_eval

    cfg = lm_eval.Config(checkpoint="task:lm_bpb")
    ctx = CellContext(**{**CTX.__dict__, "checkpoint_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="no lm_bpb checkpoint for transformer.*run the lm_bpb"):
        lm_eval.checkpoint_path(cfg, ctx)


def test_lm_bpb_checkpoint_is_shared_with_lm_eval_through_the_runner(tmp_path: Path,
                                                                     db_url: str) -> None:
    suite = write_suite(tmp_path / "lm.yaml", ["transformer"], {
        "lm_bpb": {"steps": 4, "batch_size": 4, "seq_len": 32, "eval_bytes": 640},
        "lm_eval": {"tasks": ["archbench_capitals"], "checkpoint": "task:lm_bpb", "limit": 2,
                    "max_length": 64},
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
    assert extra["token_budget"] == 4 * 4 * 32 and extra["lr"] == 3e-3
    assert extra["num_params"] > 0 and extra["test_bytes_scored"] == 640
    # the lm_eval cell read the very file the lm_bpb cell wrote, and that file names its cell
    path = Path(extra["checkpoint"])
    assert path.is_file() and path.is_relative_to(ckpt_dir)
    assert checkpoints.read_metadata(path)["cell_id"] == bpb["cell_id"]
    for task in ("lm_eval", "prefill_latency"):  # one trained model, no retraining
        users = [r for r in rows if r["task"] == task]
        assert users and {r["extra"]["checkpoint"] for r in users} == {str(path)}, task
