"""`hf:` variants (Hugging Face transformers models) under the registry-wide contract.

Skipped when transformers is not importable, unless ARCHBENCH_REQUIRE_HF=1 (CI sets the `test`
extra, which installs it). Offline: models are built from config classes only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm_eval imports datasets
REQUIRED = os.environ.get("ARCHBENCH_REQUIRE_HF") == "1"
if importlib.util.find_spec("transformers") is None and not REQUIRED:
    pytest.skip("transformers is not installed (pip install 'archbench[hf]')",
                allow_module_level=True)

import architectures  # noqa: E402
from architectures import ConfigError, sizing, state_numel  # noqa: E402
from architectures.registry import RegistryError  # noqa: E402
from harness import db  # noqa: E402
from harness.cli import main  # noqa: E402
from tests.conftest import write_suite  # noqa: E402

HF = architectures.names(include_hf=True)[len(architectures.names()):]
SMALL = {"vocab_size": 31, "d_model": 32, "n_layers": 2}
T = 13
# what a variant does not support, and why (none today: all pass the contract below)
UNSUPPORTED: dict[str, str] = {}


def _model(name: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return architectures.build(name, **{**SMALL, **overrides}).eval()


def _tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SMALL["vocab_size"], (batch, length), generator=g)


def test_the_supported_types_are_listed() -> None:
    assert {"hf:mamba", "hf:mamba2", "hf:rwkv", "hf:llama", "hf:gpt_neox", "hf:jamba"} <= set(HF)
    assert architectures.names() == [n for n in architectures.names(include_hf=True)
                                     if not n.startswith("hf:")]


@pytest.mark.parametrize("name", HF)
@torch.no_grad()
def test_step_unrolled_equals_forward_and_state_size_matches(name: str) -> None:
    model, x = _model(name), _tokens(2, T)
    logits = model(x)
    assert logits.shape == (2, T, SMALL["vocab_size"])
    state, steps = model.init_state(2), []
    for t in range(T):
        out, state = model.step(x[:, t : t + 1], state)
        steps.append(out)
    assert (torch.cat(steps, 1) - logits).abs().max().item() <= 1e-4
    assert model.state_size(T) == state_numel(state) > 0
    assert model.state_size(0) == state_numel(model.init_state(3))
    assert model.state_bytes(T, 3) == model.state_size(T) * 3 * 4


@pytest.mark.parametrize("name", HF)
@torch.no_grad()
def test_prefill_then_step_and_plain_dict_states(name: str) -> None:
    model, x = _model(name), _tokens(2, T)
    logits = model(x)
    pre, state = model.prefill(x[:, :7])
    torch.testing.assert_close(pre, logits[:, :7], atol=1e-5, rtol=0)
    for layer in state:  # a dict of tensors per layer, leading dim the batch
        assert isinstance(layer, dict) and all(v.shape[0] == 2 for v in layer.values())
    plain = [dict(layer) for layer in state]  # no cache object behind it: rebuilt from dicts
    out, _ = model.step(x[:, 7:8], plain)
    torch.testing.assert_close(out[:, 0], logits[:, 7], atol=1e-5, rtol=0)
    empty, state0 = model.prefill(x[:, :0])
    assert empty.shape == (2, 0, SMALL["vocab_size"]) and state_numel(state0) == 0


@pytest.mark.parametrize("name", HF)
@torch.no_grad()
def test_causal(name: str) -> None:
    model, x = _model(name), _tokens(2, T)
    changed = x.clone()
    changed[:, 8:] = _tokens(2, T - 8, seed=1)
    torch.testing.assert_close(model(changed)[:, :8], model(x)[:, :8], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", HF)
@torch.no_grad()
def test_batch_invariant(name: str) -> None:
    model, batch = _model(name), _tokens(3, T)
    torch.testing.assert_close(model(batch[1:2]), model(batch)[1:2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", HF)
def test_seeded_canonical_config_and_metadata(name: str) -> None:
    a, b = _model(name), _model(name)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert a.num_params() == sum(p.numel() for p in a.parameters()) > 0
    assert a.variant == name and list(a.config) == architectures.config_keys(name)
    assert json.loads(json.dumps(a.config)) == a.config
    assert architectures.resolve_config(name, **a.config) == a.config
    assert a.config["d_model"] == 32 and a.hf.config.hidden_size == 32
    variant = architectures.get(name)
    assert variant.family.startswith("transformers ") and variant.papers and variant.doc
    assert "transformers" in a.kernel_path and len(a.kernel_path) <= 100
    assert a.kernel_path.startswith(("hf-slow-path", "hf-fused", "hf-sdpa", "hf-eager"))


def test_any_config_key_is_overridable() -> None:
    model = _model("hf:mamba", state_size=8, conv_kernel=3)
    assert model.hf.config.state_size == 8 and model.config["state_size"] == 8
    llama = _model("hf:llama", num_attention_heads=2, intermediate_size=40)
    assert llama.hf.config.num_key_value_heads == 2 and llama.hf.config.intermediate_size == 40


@pytest.mark.parametrize("name", ["hf:mamba", "hf:llama", "hf:rwkv"])
def test_sized_to_a_budget(name: str) -> None:
    sized = sizing.size_for_budget(name, 200_000, tolerance=0.1, vocab_size=64)
    assert abs(sized.rel_error) <= 0.1
    assert _model(name, **{**sized.config}).num_params() == sized.total_params


def test_local_folder_loads_without_network(tmp_path: Path) -> None:
    model = _model("hf:llama")
    model.hf.save_pretrained(tmp_path / "tiny")
    name = f"hf:{tmp_path / 'tiny'}"
    loaded = architectures.build(name).eval()
    x = _tokens(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(("name", "config", "error", "message"), [
    ("hf:nosuchmodel", {}, RegistryError, "has no causal LM model type 'nosuchmodel'"),
    ("hf:mamba", {"state_sise": 4}, ConfigError, "unknown config key 'state_sise' (did you mean"),
    ("hf:/nonexistent/folder", {}, RegistryError, "no config.json in folder"),
    ("hf:llama", {"d_model": 30}, ConfigError, "does not split into 4 heads"),
    ("hf:rwkv", {"n_layers": 1}, ConfigError, "n_layers must be >= 2"),
])
def test_bad_input_is_one_line(name: str, config: dict, error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        architectures.build(name, **config)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_names_exit_2_through_the_cli(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for arch in ("hf:nosuchmodel", f"hf:{tmp_path}"):
        suite = write_suite(tmp_path / "bad.yaml", [arch])
        assert main(["--db", f"sqlite:///{tmp_path / 'x.db'}", "run", "--suite", str(suite),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("no causal LM" in err or "config.json" in err)


def test_without_transformers_an_hf_name_is_one_line() -> None:
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import architectures\n"
            "assert architectures.names(include_hf=True) == architectures.names()\n"
            "try:\n    architectures.build('hf:mamba')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout.strip()
    assert out.startswith("RegistryError hf: architectures need the optional dependency "
                          "transformers") and "\n" not in out


def test_listed_with_the_transformers_version(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import catalog

    entries = {e["name"]: e for e in catalog.listing("architectures")}
    import transformers

    assert entries["hf:mamba"]["family"] == f"transformers {transformers.__version__}, " \
                                            "MambaForCausalLM"


@pytest.mark.slow
def test_a_suite_runs_hf_variants_through_the_tasks(tmp_path: Path) -> None:
    task_cfgs = {
        "prefill_latency": {"seq_len": 16, "n_samples": 3, "warmup": 1, "min_sample_s": 0.001},
        "decode_latency": {"context_len": 8, "n_samples": 3, "warmup": 1, "min_sample_s": 0.001},
        "peak_memory": {"seq_len": 16},
        "mqar": {"seq_len": 6, "n_pairs": 2, "n_keys": 8, "steps": 5, "train_size": 64,
                 "test_size": 16, "batch_size": 8},
    }
    archs = ["hf:mamba", "hf:llama", "hf:rwkv"]
    suite = write_suite(tmp_path / "hf.yaml", archs, task_cfgs)
    # transformers' RWKV needs 2 layers (its init divides by n_layers - 1); the suite shares 1
    suite.write_text(suite.read_text().replace("hf:rwkv: {}", "hf:rwkv: {n_layers: 2}"))
    assert "n_layers: 2" in suite.read_text()
    url = f"sqlite:///{tmp_path / 'hf.db'}"
    assert main(["--db", url, "run", "--suite", str(suite), "--no-progress"]) == 0
    rows = db.results(db.connect(url))
    assert {(r["arch"], r["task"]) for r in rows} == {(a, t) for a in archs for t in task_cfgs}
    bad = [(r["arch"], r["task"], r["status"], r["error"]) for r in rows if r["status"] != "ok"]
    assert not bad, bad
    assert all("transformers" in (r["kernel_path"] or "") for r in rows)


def test_our_mixers_agree_with_the_transformers_ones() -> None:
    """Same weights, float32: the parallel forward and single-token steps after a prefill (each
    side's own cache) agree within 1e-5 relative (benchmarks/hf_pairs.py has the mappings)."""
    from benchmarks.hf_pairs import pairs

    diffs = pairs()
    assert set(diffs) == {"mamba / MambaMixer", "mamba2 / Mamba2Mixer",
                          "rwkv / RwkvSelfAttention", "transformer / LlamaAttention"}
    assert all(set(d) == {"forward", "step"} for d in diffs.values())
    assert all(v <= 1e-5 for d in diffs.values() for v in d.values()), diffs


def _hf_logprob(model: torch.nn.Module, ctx: list[int], cont: list[int]) -> float:
    """Sum of log p(cont | ctx) from the transformers model's own forward, no batching."""
    tokens = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = model.hf(input_ids=tokens[:, :-1]).logits.log_softmax(-1)[0]  # (T-1, V)
    return sum(logp[len(ctx) - 1 + j, c].item() for j, c in enumerate(cont))


def test_lm_eval_scores_an_hf_model_as_its_own_forward() -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from tasks._lm_eval_adapter import BOS, ArchbenchLM, encode

    def req(kind: str, *args: str) -> Instance:
        return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=(None, 0, 1))

    model = _model("hf:llama", vocab_size=256)  # byte-level: the adapter needs 256 tokens
    lm = ArchbenchLM(model=model, batch_size=2)  # unequal lengths share a right-padded batch
    pairs = [("The capital of France is", " Paris"), ("Hi", " there, friend"), ("", "abc")]
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
    for (ctx, cont), (lp, greedy) in zip(pairs, got, strict=True):
        assert math.isfinite(lp) and lp < 0 and isinstance(greedy, bool)
        assert lp == pytest.approx(_hf_logprob(model, encode(ctx) or [BOS], encode(cont)),
                                   abs=1e-4)
    text = "A short document. " * 3
    (rolled,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", text)])
    assert rolled == pytest.approx(_hf_logprob(model, [BOS], encode(text)), abs=1e-3)
