"""Checkpoints: a saved model reloads to identical logits; a bad file is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import architectures
import harness
from tasks.instruments import checkpoints
from tasks.instruments.checkpoints import CheckpointError

TINY = {"d_model": 32, "n_layers": 1}


@pytest.mark.parametrize("arch", ["transformer", "mamba"])
def test_round_trip_gives_identical_logits(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = architectures.build(arch, **TINY).eval()
    path = checkpoints.save(model, tmp_path / "m.pt", cell_id="abc123", extra={"step": 7})
    loaded = checkpoints.load(path)
    assert loaded.variant == arch and loaded.config == model.config
    tokens = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    meta = checkpoints.read_metadata(path)
    assert meta["cell_id"] == "abc123" and meta["extra"] == {"step": 7}
    assert meta["archbench_version"] == harness.__version__
    assert meta["config"] == architectures.resolve_config(arch, **TINY)
    assert "state_dict" not in meta


def _payload(tmp_path: Path) -> tuple[Path, dict]:
    torch.manual_seed(0)
    path = checkpoints.save(architectures.build("transformer", **TINY), tmp_path / "m.pt")
    return path, torch.load(path, weights_only=True)


def test_corrupt_and_foreign_files_raise_one_line(tmp_path: Path) -> None:
    path, _ = _payload(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as err:
        checkpoints.load(path)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an archbench checkpoint"):
        checkpoints.load(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoints.load(tmp_path / "missing.pt")


def test_mismatched_weights_and_config_raise(tmp_path: Path) -> None:
    path, payload = _payload(tmp_path)
    payload["config"] = {**payload["config"], "d_model": 64}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="has shape") as err:
        checkpoints.load(path)
    assert "\n" not in str(err.value)
    _, payload = _payload(tmp_path)
    payload["config"] = {**payload["config"], "no_such_key": 1}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        checkpoints.load(path)
    _, payload = _payload(tmp_path)
    del payload["state_dict"]["head.weight"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="missing"):
        checkpoints.load(path)


def test_extra_must_be_json(tmp_path: Path) -> None:
    model = architectures.build("transformer", **TINY)
    with pytest.raises(CheckpointError, match="JSON"):
        checkpoints.save(model, tmp_path / "m.pt", extra={"bad": object()})
