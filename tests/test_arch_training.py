"""Every registered variant learns: a tiny model trained briefly on a copy task cuts its loss.

Causal variants read a random prefix, a separator, then the prefix again, and are scored on
predicting the repeat token by token. Bidirectional variants (linformer) see the repeat masked
and are scored on filling it in (denoising). Data are fresh each step from a local generator;
the loss is measured on one fixed held-out batch before and after training.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import architectures

VOCAB = 16
N_DATA = VOCAB - 2  # data tokens 0..13; then the separator and the mask
SEP, MASK = VOCAB - 2, VOCAB - 1
PREFIX = 4  # with 8, mamba, mamba2, gla, retnet and pool_mixer need far more than 200 steps
MODEL = {"vocab_size": VOCAB, "d_model": 32, "n_layers": 2}
STEPS, BATCH, LR = 200, 32, 3e-3
RATIO = 0.7  # final held-out loss must fall below this fraction of the initial one


def batch(size: int, gen: torch.Generator, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) with targets -100 where nothing is scored.

    Causal: inputs [p, SEP, p[:-1]] (B, 2P), targets the next token, scored on the repeat.
    Bidirectional: inputs [p, SEP, MASK x P] (B, 2P+1), targets p at the masked positions.
    """
    prefix = torch.randint(0, N_DATA, (size, PREFIX), generator=gen)
    sep = torch.full((size, 1), SEP)
    ignore = torch.full((size, PREFIX + 1), -100)
    if causal:
        seq = torch.cat([prefix, sep, prefix], dim=1)  # (B, 2P+1)
        return seq[:, :-1], torch.cat([ignore[:, 1:], prefix], dim=1)
    masked = torch.cat([prefix, sep, torch.full_like(prefix, MASK)], dim=1)  # (B, 2P+1)
    return masked, torch.cat([ignore, prefix], dim=1)


def loss_of(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def small_model(name: str) -> architectures.LanguageModel:
    keys = set(architectures.config_keys(name))
    extra = {"max_seq_len": 2 * PREFIX + 1} if "max_seq_len" in keys else {}
    shared = {k: v for k, v in MODEL.items() if k not in architectures.fixed_keys(name)}
    torch.manual_seed(0)
    return architectures.build(name, **shared, **extra)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tensors this small train fastest on one thread, and never fight other work for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", architectures.names())
def test_variant_learns_to_copy(name: str) -> None:
    causal = architectures.get(name).causal
    model = small_model(name)
    held_out = batch(256, torch.Generator().manual_seed(1), causal)
    with torch.no_grad():
        initial = loss_of(model, *held_out).item()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        loss = loss_of(model, *batch(BATCH, gen, causal))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = loss_of(model, *held_out).item()
    assert final < RATIO * initial, f"{name}: held-out loss {initial:.3f} -> {final:.3f}"
