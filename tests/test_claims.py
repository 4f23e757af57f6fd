"""Seed-paper claims (harness/claims.py): the shipped file, bad files, and verdicts on small
databases (reproduced, not reproduced, not run; seeds averaged; scaling exponents)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import claimfile, claims, db
from harness.claims import NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim, ClaimError
from harness.ids import canonical_hash, setting_id

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"title": "T", "authors": "A", "year": 2024, "url": "https://arxiv.org/abs/1"}


def _row(arch: str, value: float | None, *, seed: int = 0, status: str = "ok",
         run: str = "r1", fp: str = "fp", task: str = "mqar", metric: str = "accuracy",
         task_config: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    row = {
        "run_id": run, "cell_id": f"{arch}-{task}-{seed}-{run}-{metric}-{status}",
        "config_hash": "cfg", "code_version": "git:abc", "hardware_fingerprint": fp,
        "arch": arch, "arch_version": 1, "arch_config": {"d_model": 64}, "task": task,
        "task_version": 1, "task_config": task_config or {"seq_len": 64}, "seed": seed,
        "metric": metric, "unit": "fraction", "value": value, "n_samples": 100,
        "status": status, "error": None if status == "ok" else "boom\nsecond line",
        "method": "argmax", "device": "cpu", "dtype": "float32", "threads": 1,
        "ci_low": None if value is None else value - 0.01,
        "ci_high": None if value is None else value + 0.01, **more,
    }
    row["setting_id"] = setting_id(row)
    row["cell_id"] = canonical_hash([row["cell_id"], row["setting_id"]])
    return row


def _claim(*predicate: dict[str, Any], task: str = "mqar", metric: str = "accuracy",
           suite: str = "textbook", where: dict[str, Any] | None = None) -> Claim:
    """A claim as :func:`claims.load` returns it (through a file, so it is checked too)."""
    return Claim(id="c", claim="x", paper=PAPER, suite=suite, task=task, metric=metric,
                 predicate=tuple(claimfile._comparison(_W, "p", dict(c), bool(where))
                                 for c in predicate), where=where or {})


_W = claimfile._Where(Path("test.yaml"), 0, {"id": "c"})


@pytest.fixture
def engine(tmp_path: Path):
    return db.connect(str(tmp_path / "claims.db"))


def _store(engine, *rows: dict[str, Any]) -> None:
    for row in rows:
        db.store(engine, [row])


RECALL = (dict(arch="transformer", at_least=0.9), dict(better="transformer", than="s4d", by=0.3))


# --- verdicts ---------------------------------------------------------------------------------


def test_reproduced_with_evidence(engine) -> None:
    _store(engine, _row("transformer", 0.97), _row("s4d", 0.4), _row("mamba", 0.2))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert (v.machine, v.status) == ("fp", REPRODUCED)
    assert "transformer accuracy 0.97" in v.reason and "\n" not in v.reason
    assert sorted(e["arch"] for e in v.evidence) == ["s4d", "transformer"]  # only what decided
    ev = next(e for e in v.evidence if e["arch"] == "transformer")
    assert ev["value"] == 0.97 and ev["n_samples"] == 100 and ev["run_id"] == "r1"
    assert ev["task_config"] == {"seq_len": 64} and ev["status"] == "ok" and ev["used"]
    assert ev["ci_low"] == pytest.approx(0.96)


def test_not_reproduced_names_the_failing_comparison(engine) -> None:
    _store(engine, _row("transformer", 0.97), _row("s4d", 0.8))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert v.status == NOT_REPRODUCED
    assert "s4d" in v.reason and "needs >= +0.3" in v.reason and "0.9 (needs" not in v.reason


def test_missing_row_is_not_run(engine) -> None:
    _store(engine, _row("transformer", 0.97))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert v.status == NOT_RUN and "no s4d accuracy row" in v.reason and "textbook" in v.reason


def test_failed_row_is_not_run_with_its_status(engine) -> None:
    _store(engine, _row("transformer", 0.97), _row("s4d", None, status="diverged"))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert v.status == NOT_RUN and "s4d accuracy is diverged: boom" in v.reason
    assert "second line" not in v.reason
    failed = next(e for e in v.evidence if e["arch"] == "s4d")
    assert failed["status"] == "diverged" and not failed["used"]


def test_an_older_finished_row_beats_a_newer_failure(engine) -> None:
    _store(engine, _row("transformer", 0.97), _row("s4d", 0.2),
           _row("s4d", None, status="failed", run="r2"))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert v.status == REPRODUCED


def test_newest_finished_row_wins(engine) -> None:
    _store(engine, _row("transformer", 0.5), _row("s4d", 0.2),
           _row("transformer", 0.95, run="r2"))
    [v] = claims.evaluate(engine, [_claim(*RECALL)])
    assert v.status == REPRODUCED
    assert [e["run_id"] for e in v.evidence if e["arch"] == "transformer"] == ["r2"]


def test_seeds_are_averaged(engine) -> None:
    _store(engine, *(_row("transformer", x, seed=s) for s, x in enumerate((0.99, 0.97, 0.80))),
           _row("s4d", 0.3))
    [v] = claims.evaluate(engine, [_claim(dict(arch="transformer", at_least=0.9))])
    assert v.status == REPRODUCED and "0.92" in v.reason  # (0.99 + 0.97 + 0.80) / 3
    assert sorted(e["seed"] for e in v.evidence) == [0, 1, 2]
    [v] = claims.evaluate(engine, [_claim(dict(arch="transformer", at_least=0.95))])
    assert v.status == NOT_REPRODUCED


def test_where_selects_the_setting(engine) -> None:
    _store(engine, _row("lstm", 0.99, task="permutation", task_config={"group": "S3"}),
           _row("lstm", 0.1, task="permutation", task_config={"group": "S5"}))
    s3 = _claim(dict(arch="lstm", at_least=0.9), task="permutation", where={"group": "S3"})
    s5 = _claim(dict(arch="lstm", at_least=0.9), task="permutation", where={"group": "S5"})
    s7 = _claim(dict(arch="lstm", at_least=0.9), task="permutation", where={"group": "S7"})
    assert [v.status for v in claims.evaluate(engine, [s3, s5, s7])] == [
        REPRODUCED, NOT_REPRODUCED, NOT_RUN]


def test_rows_of_the_claims_suite_are_preferred(engine) -> None:
    db.start_run(engine, "rt", "textbook", "git:abc", "fp", 1)
    db.start_run(engine, "rc", "capability", "git:abc", "fp", 1)
    _store(engine, _row("transformer", 0.95, run="rt"), _row("transformer", 0.3, run="rc"))
    claim = _claim(dict(arch="transformer", at_least=0.9))
    [v] = claims.evaluate(engine, [claim])
    assert v.status == REPRODUCED and v.evidence[0]["suite"] == "textbook"


def test_relative_to_floor(engine) -> None:
    _store(engine, _row("mamba", 0.5, extra={"floor": 0.2, "chance": 0.1}),
           _row("s4d", 0.5))
    [v] = claims.evaluate(engine, [_claim(dict(arch="mamba", at_least=0.29,
                                               relative_to_floor=True))])
    assert v.status == REPRODUCED and "above floor 0.3" in v.reason
    assert v.evidence[0]["floor"] == 0.2
    [v] = claims.evaluate(engine, [_claim(dict(arch="s4d", at_most=0.5, relative_to_floor=True))])
    assert v.status == NOT_RUN and "has no floor" in v.reason


def test_per_machine_verdicts_and_no_rows_at_all(engine) -> None:
    _store(engine, _row("transformer", 0.97), _row("s4d", 0.1),
           _row("transformer", 0.97, fp="fp2"))
    both = _claim(*RECALL)
    nothing = _claim(dict(arch="lstm", at_least=0.9), task="parity")
    out = claims.evaluate(engine, [both, nothing])
    assert [(v.claim.task, v.machine, v.status) for v in out] == [
        ("mqar", "fp", REPRODUCED), ("mqar", "fp2", NOT_RUN), ("parity", None, NOT_RUN)]
    assert "no results of task parity" in out[2].reason
    text = claims.as_text(out)
    assert "reproduced" in text and "1 reproduced, 0 not reproduced, 2 not run" in text


def test_scaling_exponent_predicate(engine) -> None:
    task, metric = "decode_latency", "state_bytes_measured"
    _store(engine, *(_row(a, 1.0, task=task, metric=metric, task_config={"context_len": 512})
                     for a in ("retnet", "transformer")))
    claim = _claim(dict(arch="retnet", exponent_at_most=0.1),
                   dict(arch="transformer", exponent_at_least=0.9),
                   task=task, metric=metric, suite="efficiency")
    [v] = claims.evaluate(engine, [claim])
    assert v.status == NOT_RUN and "no retnet scaling exponent" in v.reason

    def figure(arch: str, value: float) -> dict[str, Any]:
        return {"task": task, "metric": metric, "series": "s", "kind": "scaling_exponent",
                "arch": arch, "other_arch": None, "value": value, "unit": "", "method": "fit",
                "points": {"x": [512, 2048, 8192]}, "code_version": "git:abc"}

    db.replace_derived(engine, "fp", [figure("retnet", 0.0), figure("transformer", 1.0)])
    [v] = claims.evaluate(engine, [claim])
    assert v.status == REPRODUCED
    assert {e["kind"] for e in v.evidence} == {"scaling_exponent"}
    db.replace_derived(engine, "fp", [figure("retnet", 0.5), figure("transformer", 1.0)])
    [v] = claims.evaluate(engine, [claim])
    assert v.status == NOT_REPRODUCED and "retnet scaling exponent" in v.reason


def test_shipped_claims_on_an_empty_database(engine) -> None:
    out = claims.evaluate(engine)
    assert len(out) == len(claims.load()) and {v.status for v in out} == {NOT_RUN}
    assert all(v.machine is None for v in out)


# --- the shipped file ---------------------------------------------------------------------------


def _variants() -> set[str]:
    return {p.stem for p in (ROOT / "architectures").glob("*.py") if not p.stem.startswith("_")}


def test_shipped_claims_name_shipped_suites_tasks_and_variants() -> None:
    shipped = claims.load()
    assert len(shipped) >= 8
    assert len({c.id for c in shipped}) == len(shipped)
    variants = _variants()
    for c in shipped:
        suite = yaml.safe_load((ROOT / "harness" / "suites" / f"{c.suite}.yaml").read_text())
        assert c.task in suite["tasks"], (c.id, c.suite, c.task)
        task_cfg = suite["tasks"][c.task] or {}
        for key, value in c.where.items():  # a pinned setting the suite overrides must match
            assert task_cfg.get(key, value) == value, (c.id, key)
        for comp in c.predicate:
            for arch in claims._operands(comp):
                assert arch in variants, (c.id, arch)
                assert arch in suite["architectures"], (c.id, c.suite, arch)
        assert c.paper["url"].startswith("https://arxiv.org/abs/")
        assert c.claim and c.paper["title"] and c.paper["authors"]


# --- bad claims files --------------------------------------------------------------------------

GOOD = """\
claims:
  - id: one
    claim: Attention recalls.
    paper: {title: T, authors: A, year: 2023, url: "https://arxiv.org/abs/1"}
    suite: textbook
    task: mqar
    metric: accuracy
    predicate:
      - {arch: transformer, at_least: 0.9}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    [c] = claims.load(_write(tmp_path, GOOD))
    assert c.id == "one" and c.predicate == ({"op": "at_least", "arch": "transformer",
                                              "at_least": 0.9},)


@pytest.mark.parametrize(("change", "field", "allowed"), [
    (("at_least: 0.9", "above: 0.9"), "predicate[0]", "at_least"),
    (("metric: accuracy\n", "metric: accuracy\n    colour: red\n"), "colour", "allowed: id"),
    (("{arch: transformer, at_least: 0.9}", "{arch: transformer, at_least: 0.9, seed: 1}"),
     "predicate[0].seed", "allowed: at_least"),
    (("    task: mqar\n", ""), "task", "required"),
    (("suite: textbook", "suite: nosuch"), "suite", "capability"),
    (("year: 2023", "year: soon"), "paper.year", "integer"),
    (("{arch: transformer, at_least: 0.9}", "{better: transformer, by: 0.1}"),
     "predicate[0].than", "than"),
    (("{arch: transformer, at_least: 0.9}", "{arch: s4d, exponent_at_most: 0.1, where: {a: 1}}"),
     "predicate[0].where", "allowed: metric"),
    (("at_least: 0.9", "at_least: 0.9, at_most: 1.0"), "predicate[0]", "exactly one"),
])
def test_bad_files_name_file_claim_and_field(tmp_path: Path, change: tuple[str, str], field: str,
                                             allowed: str) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ClaimError) as err:
        claims.load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: claim one: {field}: "), message
    assert allowed in message


def test_duplicate_id_and_bad_yaml(tmp_path: Path) -> None:
    twice = GOOD + GOOD.split("claims:\n", 1)[1]
    with pytest.raises(ClaimError, match=r"claim one: id: given twice"):
        claims.load(_write(tmp_path, twice))
    with pytest.raises(ClaimError, match=r"claims\.yaml: "):
        claims.load(_write(tmp_path, "claims: [a: &x 1]\n"))
    with pytest.raises(ClaimError, match=r"\(top level\)"):
        claims.load(_write(tmp_path, "claim: []\n"))


def test_cli_claims_table_json_and_a_bad_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    path = tmp_path / "empty.db"
    assert main(["--db", str(path), "claims"]) == 0
    assert "not run" in capsys.readouterr().out
    assert main(["--db", str(path), "claims", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) >= 8 and {v["status"] for v in out} == {"not run"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims: [{id: x}]\n")
    assert main(["--db", str(path), "claims", "--file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
