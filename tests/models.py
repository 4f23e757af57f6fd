"""Tiny models and token batches for the architecture tests (one definition, not one per file).

``small_model(name, base, **overrides)``: a float32 model of ``name``, seeded 0, from the
``base`` config (its keys the variant fixes left out) with ``overrides``; keys the variant does
not accept are dropped, so one base serves every variant of a family.
"""

from __future__ import annotations

import torch

import architectures


def small_model(name: str, base: dict[str, object], **overrides: object
                ) -> architectures.LanguageModel:
    keys = set(architectures.config_keys(name))
    shared = {k: v for k, v in base.items() if k not in architectures.fixed_keys(name)}
    torch.manual_seed(0)
    return architectures.build(
        name, **{k: v for k, v in {**shared, **overrides}.items() if k in keys})


def tokens(vocab: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """``batch`` x ``length`` token ids below ``vocab``, from a generator seeded ``seed``."""
    return torch.randint(0, vocab, (batch, length),
                         generator=torch.Generator().manual_seed(seed))
