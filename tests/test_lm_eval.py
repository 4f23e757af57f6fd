"""lm-evaluation-harness integration: the adapter's three request types, and the archbench task."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# offline before lm_eval (and the datasets library it imports) read these at import
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

import architectures  # noqa: E402
from harness import db
from harness.cli import main  # noqa: E402
from tasks._lm_eval_adapter import BOS, ArchbenchLM, encode  # noqa: E402
from tasks.instruments import checkpoints  # noqa: E402
from tasks.lm_eval import SHIPPED, task_manager  # noqa: E402
from tests.conftest import write_suite  # noqa: E402

TINY = {"d_model": 32, "n_layers": 1}


def tiny(arch: str = "mamba") -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.build(arch, **TINY).eval()


def req(kind: str, *args: Any, task: str | None = None) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=(task, 0, 1))


def test_registered_and_built_from_model_args(tmp_path: Path) -> None:
    assert get_model("archbench") is ArchbenchLM
    lm = ArchbenchLM.create_from_arg_string("arch=mamba,d_model=32,n_layers=1,max_length=64")
    assert lm.model.variant == "mamba" and lm.model.config["d_model"] == 32
    assert lm.max_length == 64
    path = checkpoints.save(tiny("transformer"), tmp_path / "t.pt")
    lm = ArchbenchLM.create_from_arg_string(f"arch=transformer,checkpoint={path}")
    assert lm.model.variant == "transformer"
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        ArchbenchLM(arch="mamba", vocab_size=32, **TINY)


def test_simple_evaluate_on_shipped_tasks() -> None:
    out = lm_eval.simple_evaluate(
        model="archbench", model_args="arch=mamba,d_model=32,n_layers=1,max_length=64",
        tasks=list(SHIPPED), task_manager=task_manager(SHIPPED), limit=3, batch_size=4,
        log_samples=False, bootstrap_iters=0)
    res = out["results"]
    assert set(res) == set(SHIPPED)
    assert 0 <= res["archbench_capitals"]["acc,none"] <= 1
    assert 0 <= res["archbench_capitals"]["acc_norm,none"] <= 1
    assert 0 <= res["archbench_copy"]["exact_match,none"] <= 1
    prose = res["archbench_prose"]
    # an untrained byte model is close to uniform over 256 bytes: about 8 bits per byte
    assert 4 < prose["bits_per_byte,none"] < 12
    assert math.isclose(prose["byte_perplexity,none"], 2 ** prose["bits_per_byte,none"],
                        rel_tol=1e-6)
    assert out["higher_is_better"]["archbench_prose"]["bits_per_byte"] is False
    assert out["higher_is_better"]["archbench_capitals"]["acc"] is True


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown lm-eval task 'archbench_capitalz'.*"
                                         "archbench_capitals"):
        task_manager(("archbench_capitalz",))


def direct_logprob(model: torch.nn.Module, ctx: list[int], cont: list[int]) -> float:
    tokens = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model(tokens[:, :-1]).log_softmax(-1)[0]  # (T-1, V)
    return sum(logp[len(ctx) - 1 + j, c].item() for j, c in enumerate(cont))


@pytest.mark.parametrize("arch", ["transformer", "mamba"])
def test_loglikelihood_matches_forward(arch: str) -> None:
    model = tiny(arch)
    lm = ArchbenchLM(model=model, batch_size=2)
    pairs = [("The capital of France is", " Paris"), ("Hi", " there, friend"), ("", "abc")]
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
    for (ctx, cont), (lp, greedy) in zip(pairs, got, strict=True):
        want = direct_logprob(model, encode(ctx) or [BOS], encode(cont))
        assert lp == pytest.approx(want, abs=1e-4)
        assert isinstance(greedy, bool)
    text = "A short document. " * 6  # 108 bytes: three windows at max_length 48
    t = encode(text)
    (rolled,) = ArchbenchLM(model=model, max_length=48).loglikelihood_rolling(
        [req("loglikelihood_rolling", text)])
    # lm-eval's disjoint windows: each byte predicted once, the last window with full context
    want = (direct_logprob(model, [BOS], t[:48]) + direct_logprob(model, t[47:48], t[48:96])
            + direct_logprob(model, t[59:96], t[96:]))
    assert rolled == pytest.approx(want, abs=1e-3)
    (full,) = ArchbenchLM(model=model, max_length=512).loglikelihood_rolling(
        [req("loglikelihood_rolling", text)])
    assert full == pytest.approx(direct_logprob(model, [BOS], t), abs=1e-3)


class NextByte(torch.nn.Module):
    """A fake byte model whose greedy choice after byte b is always b + 1 (p about 0.9)."""

    variant = "next-byte"

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(1, 256)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, 256)  # (B, T, V)
        logits.scatter_(-1, ((tokens + 1) % 256).unsqueeze(-1), 8.0)
        return logits


def test_is_greedy_is_true_exactly_when_every_byte_is_the_argmax() -> None:
    lm = ArchbenchLM(model=NextByte(), batch_size=2)
    pairs = [("abc", "def"), ("abc", "dez"), ("abc", "xef"), ("", "\x01\x02")]
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
    assert [greedy for _, greedy in got] == [True, False, False, True]
    assert got[0][0] > got[1][0] and got[0][0] > got[2][0]


@pytest.mark.parametrize("arch", ["transformer", "mamba"])
def test_is_greedy_of_a_real_model_follows_its_argmax(arch: str) -> None:
    model = tiny(arch)
    ctx = encode("Question: capital?")
    seq = list(ctx)
    with torch.no_grad():
        for _ in range(4):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        runner_up = int(model(torch.tensor([seq[:-1]]))[0, -1].topk(2).indices[1])
    greedy, other = seq[len(ctx):], seq[len(ctx):-1] + [runner_up]
    lm = ArchbenchLM(model=model)
    got = lm._score([(ctx, greedy), (ctx, other)])
    assert [g for _, g in got] == [True, False]


def test_requests_longer_than_max_length_are_counted_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    lm = ArchbenchLM(model=NextByte(), max_length=8)
    with caplog.at_level("WARNING", logger="tasks._lm_eval_adapter"):
        lm.loglikelihood([
            req("loglikelihood", "abcdefghij", "klm", task="t1"),  # 13 bytes: context cut
            req("loglikelihood", "a", "bcdefghijkl", task="t1"),  # continuation of 11 > 8
            req("loglikelihood", "ab", "cdefgh", task="t1"),  # 8 + 1 bytes: fits
            req("loglikelihood", "abcdefgh", "ij", task="t2"),  # 10: context cut
        ])
    assert "3 of 4 loglikelihood requests are longer than max_length 8" in caplog.text
    assert lm.truncations == {"t1": {"context": 1, "continuation": 1, "prompt": 0},
                              "t2": {"context": 1, "continuation": 0, "prompt": 0}}
    lm.loglikelihood_rolling([req("loglikelihood_rolling", "x" * 50, task="t3")])
    assert "t3" not in lm.truncations  # rolling windows fit by construction
    lm.model = Scripted(b"0")
    lm.generate_until([req("generate_until", "a long prompt", {"max_gen_toks": 1}, task="t3")])
    assert lm.truncations["t3"] == {"context": 0, "continuation": 0, "prompt": 1}


class Scripted(torch.nn.Module):
    """A fake byte model whose step emits a fixed script after the prompt; forward is banned."""

    variant = "scripted"

    def __init__(self, script: bytes) -> None:
        super().__init__()
        self.script = script
        self.head = torch.nn.Linear(1, 256)
        self.steps = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise AssertionError("generation must not re-run forward")

    def init_state(self, batch: int, **_: Any) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.long)  # bytes seen so far

    def step(self, tokens: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, Any]:
        self.steps += 1
        logits = torch.zeros(tokens.shape[0], 1, 256)
        for b in range(tokens.shape[0]):
            logits[b, 0, self.script[int(state[b]) % len(self.script)]] = 1.0
        return logits, state + 1


def test_generate_until_steps_once_and_stops_at_until() -> None:
    model = Scripted(b"0123456789")
    lm = ArchbenchLM(model=model, batch_size=4)
    prompts = ["abc", "xyz", "a longer prompt"]
    outs = lm.generate_until([
        req("generate_until", prompts[0], {"until": ["56"], "max_gen_toks": 50}),
        req("generate_until", prompts[1], {"until": "2", "max_gen_toks": 50}),
        req("generate_until", prompts[2], {"max_gen_toks": 4}),
    ])
    # the script is indexed by bytes seen, prompt included: "abc" is followed by "2345..."
    assert outs == ["234", "", "4567"]
    # each prompt is fed once (3 steps for the batch of two, 15 alone), then one step per
    # generated byte but the last: 5 and 4 bytes generated
    assert model.steps == 3 + 4 + 15 + 3


@pytest.mark.parametrize("arch", ["transformer", "mamba"])
def test_generate_until_equals_greedy_forward(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(arch)
    prompt = encode("Word: apple\nCopy: ")
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    want = bytes(seq[len(prompt):]).decode("utf-8", errors="replace")

    def banned(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("generation must step, not re-run forward")

    monkeypatch.setattr(model, "forward", banned)
    lm = ArchbenchLM(model=model)
    (got,) = lm.generate_until([req("generate_until", "Word: apple\nCopy: ",
                                    {"until": [], "max_gen_toks": 8})])
    assert got == want


@pytest.mark.slow
def test_lm_eval_task_through_harness(tmp_path: Path, db_url: str) -> None:
    cfg = {"lm_eval": {"tasks": ["archbench_capitals", "archbench_prose"], "limit": 2,
                       "max_length": 64}}
    suite = write_suite(tmp_path / "lm.yaml", ["transformer"], cfg)
    assert main(["--db", db_url, "run", "--suite", str(suite), "--no-progress"]) == 0
    rows = [r for r in db.results(db.connect(db_url)) if r["task"] == "lm_eval"]
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows]
    by_name = {r["metric"]: r for r in rows}
    assert {"archbench_capitals/acc", "archbench_capitals/acc_norm",
            "archbench_prose/bits_per_byte", "archbench_prose/word_perplexity"} <= set(by_name)
    acc = by_name["archbench_capitals/acc"]
    assert 0 <= acc["value"] <= 1 and acc["higher_is_better"] is True
    assert "lm-evaluation-harness" in acc["method"] and lm_eval.__version__ in acc["method"]
    assert by_name["archbench_prose/bits_per_byte"]["higher_is_better"] is False


def test_lm_eval_reads_max_length_from_the_checkpoint(tmp_path: Path) -> None:
    from tasks import lm_eval as task
    from tasks.instruments.context import CellContext

    path = checkpoints.save(tiny("mamba"), tmp_path / "m.pt", extra={"seq_len": 16})
    bare = checkpoints.save(tiny("mamba"), tmp_path / "bare.pt")
    assert task.max_length(task.Config(), str(path)) == (16, "checkpoint seq_len")
    assert task.max_length(task.Config(max_length=64), str(path)) == (64, "config")
    assert task.max_length(task.Config(), str(bare))[0] == task.DEFAULT_MAX_LENGTH
    assert task.max_length(task.Config(), None)[0] == task.DEFAULT_MAX_LENGTH
    ctx = CellContext(arch="mamba", arch_config=TINY, seed=0, device="cpu", dtype="float32",
                      threads=1)
    cfg = task.Config(tasks=("archbench_capitals",), checkpoint=str(path), limit=2)
    rows = task.run(cfg, ctx)
    # every capitals prompt ("Question: What is the capital of ...") is longer than 16 bytes:
    # 2 documents x 4 choices, all cut, counted on every row of the task
    assert {r.extra["max_length"] for r in rows} == {16}
    assert {r.extra["truncated_requests"] for r in rows} == {8}
    assert rows[0].extra["truncations"] == {"context": 8, "continuation": 0, "prompt": 0}
    assert "max_length 16" in rows[0].method


def test_lm_eval_is_shown_but_not_ranked() -> None:
    from tasks import lm_eval as task

    t = task.TASK
    assert t.ranked is False and str(task.HEADLINE_ITEMS) in t.unranked_reason
    assert task.HEADLINE_ITEMS < 200  # grow capitals to >= 200 verified items before ranking


def test_lm_eval_task_scores_a_checkpoint(tmp_path: Path) -> None:
    from tasks import lm_eval as task
    from tasks.instruments.context import CellContext

    path = checkpoints.save(tiny("mamba"), tmp_path / "m.pt")
    cfg = task.Config(tasks=("archbench_capitals",), checkpoint=str(path), limit=2, max_length=64)
    ctx = CellContext(arch="mamba", arch_config=TINY, seed=0, device="cpu", dtype="float32",
                      threads=1)
    metrics = {m.name: m for m in task.run(cfg, ctx)}
    assert set(metrics) == {"archbench_capitals/acc", "archbench_capitals/acc_norm"}
    assert metrics["archbench_capitals/acc"].extra["checkpoint"] == str(path)
    assert metrics["archbench_capitals/acc"].n_samples == 2
    assert metrics["archbench_capitals/acc"].extra["truncated_requests"] == 0
    wrong = CellContext(arch="transformer", arch_config=TINY, seed=0, device="cpu",
                        dtype="float32", threads=1)
    with pytest.raises(ValueError, match="holds a mamba model"):
        task.run(cfg, wrong)
