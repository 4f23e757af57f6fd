"""Model checkpoints: weights plus what is needed to rebuild the model, in one torch file.

A checkpoint is a ``torch.save``d dict of plain types and tensors (so ``torch.load`` runs with
``weights_only=True`` and never unpickles code): the variant name and version, the resolved
config, the cell id that produced it, the archbench version and the state dict. ``load``
rebuilds the model with ``architectures.build(variant, **config)`` and loads the weights
strictly; any mismatch is a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import architectures

__all__ = ["FORMAT", "FORMAT_VERSION", "CheckpointError", "load", "path_for", "read_metadata",
           "save"]

FORMAT = "archbench-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its model; the message is one line."""


def _version() -> str:
    """The installed archbench package's version (checkpoints sit below the harness, which
    defines ``harness.__version__`` from the same pyproject)."""
    try:
        return metadata.version("archbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def path_for(root: str | Path, task: str, arch: str, arch_config: dict[str, Any],
             seed: int) -> Path:
    """Where the model a task trained for (arch, arch config, seed) is kept under ``root``;
    another cell (an lm-eval or efficiency task) finds it again from the same facts."""
    blob = json.dumps(arch_config, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(root) / task / f"{arch}-{digest}-seed{seed}.pt"


def save(model: Any, path: str | Path, *, cell_id: str | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a ``LanguageModel``) to ``path``; returns the path.

    Weights are saved as float32 on CPU whatever the model's device and dtype, so a checkpoint
    loads anywhere; ``extra`` must be JSON-serializable (it is stored as plain types).
    """
    extra = dict(extra or {})
    try:
        extra = json.loads(json.dumps(extra))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint extra must be JSON-serializable: {err}") from None
    variant = architectures.get(model.variant)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "variant": model.variant,
        "variant_version": variant.version,
        "config": dict(model.config),
        "cell_id": cell_id,
        "archbench_version": _version(),
        "extra": extra,
        "state_dict": {k: v.detach().to("cpu", torch.float32) if v.is_floating_point()
                       else v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint under `path`
    return path


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds (pickle, zip, runtime) for a bad file
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({msg})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an archbench checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version "
                              f"{payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    return payload


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Everything in the checkpoint but the weights."""
    return {k: v for k, v in _read(path).items() if k != "state_dict"}


def load(path: str | Path, *, device: str | torch.device = "cpu",
         dtype: torch.dtype | None = None) -> Any:
    """The ``LanguageModel`` saved at ``path``, in eval mode on ``device`` (and ``dtype``)."""
    payload = _read(path)
    name, config = payload["variant"], payload["config"]
    try:
        model = architectures.build(name, **config)
    except (KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot rebuild {name!r} from its config: {first}") from None
    variant = architectures.get(name)
    if payload.get("variant_version") != variant.version:
        raise CheckpointError(f"{path}: saved by {name} version {payload.get('variant_version')}"
                              f", installed version is {variant.version}")
    expected = model.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {name}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{path}: weight {k!r} has shape {tuple(state[k].shape)}, "
                              f"{name} expects {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True)
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval()
