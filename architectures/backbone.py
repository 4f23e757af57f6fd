"""The one backbone every variant shares (after zoology): only the sequence mixer changes.

embedding -> n_layers x [norm -> mixer -> residual, norm -> MLP(GELU) -> residual] -> norm -> head.
Axes any variant can turn: where the norms sit (`norm_position`: Pre-LN, Post-LN, Peri-LN) and
which (`norm`), routed expert MLPs instead of the dense one (`n_experts`, `top_k`), and the stack
applied `n_loops` times with shared weights. Also the config entry points: `config_keys`,
`fixed_keys`, `resolve_config`, `build` and `same_function`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from architectures.configs import as_dict, build_config

from . import _hf, _hf_model
from ._common import REGISTRY, ConfigError, Variant, check_fields, choice, integer
from ._common import unknown_keys_message as _unknown_keys_message

__all__ = [
    "BackboneConfig",
    "LanguageModel",
    "build",
    "check_keys",
    "config_keys",
    "fixed_keys",
    "get",
    "names",
    "prefill_by_steps",
    "resolve_config",
    "same_function",
]


@dataclass(frozen=True)
class BackboneConfig:
    """Backbone keys every variant accepts."""

    vocab_size: int = integer(256)  # byte-level by default
    d_model: int = integer(64)  # residual width D
    n_layers: int = integer(2)  # blocks, each one mixer + one MLP
    mlp_ratio: int = integer(4)  # MLP hidden width = mlp_ratio * D
    norm: str = choice("layernorm", ("layernorm", "rmsnorm"))  # normalization layer kind
    # pre: x + f(norm(x)); post: norm(x + f(x)) (no final norm); peri: x + norm(f(norm(x)))
    norm_position: str = choice("pre", ("pre", "post", "peri"))
    n_experts: int = integer(0, minimum=0)  # 0: dense MLP; else this many routed expert MLPs
    top_k: int = integer(1)  # experts per token (when n_experts > 0)
    n_loops: int = integer(1)  # times the stack of n_layers blocks runs, weights shared

    def check(self) -> None:
        if self.n_experts and self.top_k > self.n_experts:
            raise ConfigError(
                f"config key 'top_k' must be <= n_experts={self.n_experts}; got {self.top_k}"
            )


_BACKBONE_KEYS = frozenset(f.name for f in fields(BackboneConfig))


def names(include_hf: bool = False) -> list[str]:
    """Registered architecture names, sorted; with `include_hf`, then the supported `hf:` model
    types the installed transformers has (`architectures._hf`; any `hf:` name resolves)."""
    return REGISTRY.names() + (_hf.names() if include_hf else [])


def get(name: str) -> Variant:
    """The registered variant `name` (or an `hf:` one); a miss raises RegistryError naming
    close matches."""
    return _hf.variant(name) if _hf.is_hf(name) else REGISTRY.get(name)


def config_keys(name: str) -> list[str]:
    """Allowed config keys of `name`: backbone keys plus its mixer keys, sorted."""
    if _hf.is_hf(name):
        return _hf.config_keys(name)
    variant = get(name)
    mixer_keys = {f.name for f in fields(variant.config_cls)}
    if mixer_keys & _BACKBONE_KEYS:  # a variant bug, not a user error
        raise TypeError(
            f"{name}: mixer config redefines backbone keys {sorted(mixer_keys & _BACKBONE_KEYS)}"
        )
    if set(variant.backbone_defaults) - _BACKBONE_KEYS:
        raise TypeError(f"{name}: backbone_defaults names keys that are not backbone keys")
    if set(variant.backbone_fixed) - _BACKBONE_KEYS:
        raise TypeError(f"{name}: backbone_fixed names keys that are not backbone keys")
    if set(variant.free_knobs) - _BACKBONE_KEYS - mixer_keys:
        raise TypeError(f"{name}: free_knobs names keys that are not config keys")
    return sorted(_BACKBONE_KEYS | mixer_keys)


def fixed_keys(name: str) -> dict[str, Any]:
    """Backbone keys `name` fixes as part of its definition (looped: {"n_layers": 1}).

    A config may repeat a fixed key with the same value; any other value is a ConfigError, so
    a suite's shared keys must leave these out for this variant.
    """
    return dict(get(name).backbone_fixed)


def check_keys(name: str, config: dict[str, Any]) -> None:
    """ConfigError for a key `name` does not accept or a fixed key given another value; the
    checks that do not depend on the width (the sizer runs them before searching widths)."""
    if _hf.is_hf(name):
        return _hf.check_keys(name, config)
    variant, allowed = get(name), config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: {_unknown_keys_message(unknown, allowed)}")
    for key, value in variant.backbone_fixed.items():
        if key in config and config[key] != value:
            raise ConfigError(
                f"{name}: {key} is fixed at {value!r} ({variant.fixed_reason}); "
                f"got {config[key]!r}"
            )


def _parse(name: str, config: dict[str, Any]) -> tuple[Variant, BackboneConfig, Any]:
    """Validated (variant, backbone config, mixer config); every error is one prefixed line."""
    check_keys(name, config)
    variant = get(name)
    # the variant's defaults, its fixed keys, then the user's
    config = {**variant.backbone_defaults, **variant.backbone_fixed, **config}
    backbone_part = {k: v for k, v in config.items() if k in _BACKBONE_KEYS}
    mixer_part = {k: v for k, v in config.items() if k not in _BACKBONE_KEYS}
    # types (and a plugin config's own validate()) first, then declared ranges and choices
    backbone = build_config(BackboneConfig, backbone_part, name)
    mixer = build_config(variant.config_cls, mixer_part, name)
    try:
        check_fields(backbone)
        backbone.check()
        check_fields(mixer)
        if hasattr(mixer, "check"):
            mixer.check(backbone.d_model)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    return variant, backbone, mixer


def _canonical(backbone: BackboneConfig, mixer: Any) -> dict[str, Any]:
    return dict(sorted({**as_dict(backbone), **as_dict(mixer)}.items()))


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Full config of `name`, every default filled, keys sorted; bad input raises ConfigError."""
    if _hf.is_hf(name):
        return _hf.resolve_config(name, **config)
    _, backbone, mixer = _parse(name, config)
    return _canonical(backbone, mixer)


def build(name: str, **config: Any) -> LanguageModel:
    """A `LanguageModel` of `name`, initialised from the global torch RNG as the caller seeded;
    an `hf:` name gives the same contract around a transformers model (`_hf_model`)."""
    if _hf.is_hf(name):
        return _hf_model.build(name, **config)  # type: ignore[return-value]
    variant, backbone, mixer = _parse(name, config)
    return LanguageModel(variant, backbone, mixer)


def same_function(name: str, config: dict[str, Any], seq_len: int) -> str | None:
    """Why `name` with `config` computes the same function as another registered variant at
    sequence length `seq_len` (e.g. a window >= seq_len is full causal attention), or None.

    Backed by an optional `same_function(seq_len, backbone)` method on the variant's mixer
    config class; planning uses it to warn about cells that duplicate each other.
    """
    if _hf.is_hf(name):
        return None
    _, backbone, mixer = _parse(name, dict(config))
    check = getattr(mixer, "same_function", None)
    return None if check is None else check(seq_len, backbone)


def _norm(kind: str, d_model: int) -> nn.Module:
    return nn.LayerNorm(d_model, eps=1e-5) if kind == "layernorm" else nn.RMSNorm(d_model, eps=1e-5)


class MLP(nn.Module):
    """Channel mixer: Linear -> GELU -> Linear, no biases."""

    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model, bias=False)
        self.proj = nn.Linear(ratio * d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(nn.functional.gelu(self.fc(x)))


def balance_loss(probs: Tensor, expert: Tensor) -> Tensor:
    """Switch Transformers' load-balancing loss n * sum_i f_i P_i (1 when routing is uniform).

    probs (M, n) router softmax; expert (M, k) chosen experts. f_i is the share of the M k
    routing slots sent to expert i (not differentiable), P_i the mean router probability of i.
    """
    n = probs.shape[-1]
    share = torch.bincount(expert.flatten(), minlength=n).to(probs.dtype) / expert.numel()
    return n * (share * probs.mean(0)).sum()


class MoE(nn.Module):
    """Routed expert MLPs (Switch top-1, GShard top-2) in place of the dense MLP.

    Each token goes to its top_k experts by router softmax, independently of the other tokens
    (no capacity, nothing dropped), so outputs are batch invariant and step equals forward.
    Top-1 scales the expert output by its router probability (Switch); top-k > 1 renormalises
    the k probabilities to sum to 1 (GShard). `aux_loss` holds the last forward's balance loss.
    """

    def __init__(self, d_model: int, ratio: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(d_model, ratio) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())

    def idle_params(self) -> int:
        """Parameters a token does not use: the experts it is not routed to."""
        per_expert = sum(p.numel() for p in self.experts[0].parameters())
        return (len(self.experts) - self.top_k) * per_expert

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (M, D), M = B * T tokens
        probs = self.router(flat).float().softmax(-1)  # (M, n)
        weight, expert = probs.topk(self.top_k, dim=-1)  # (M, k)
        if self.top_k > 1:
            weight = weight / weight.sum(-1, keepdim=True)
        # one row per (token, slot): every write lands in its own place, so no atomics on GPU
        out = flat.new_zeros(flat.shape[0], self.top_k, flat.shape[1])  # (M, k, D)
        for i, mlp in enumerate(self.experts):
            token, slot = (expert == i).nonzero(as_tuple=True)
            out[token, slot] = mlp(flat[token]) * weight[token, slot, None].to(flat.dtype)
        self.aux_loss = balance_loss(probs, expert)
        return out.sum(1).view(x.shape)


def _channel_mixer(cfg: BackboneConfig) -> nn.Module:
    if cfg.n_experts:
        return MoE(cfg.d_model, cfg.mlp_ratio, cfg.n_experts, cfg.top_k)
    return MLP(cfg.d_model, cfg.mlp_ratio)


class Block(nn.Module):
    """Residual block of a mixer and a channel mixer, norms placed by `norm_position`.

    pre:  x + f(norm(x)); post: norm(x + f(x)); peri: x + norm_out(f(norm(x))), as in
    *Peri-LN*. Norms act per token, so `step` applies them exactly as `forward` does.
    """

    def __init__(self, mixer: nn.Module, cfg: BackboneConfig) -> None:
        super().__init__()
        self.position = cfg.norm_position
        self.norm1 = _norm(cfg.norm, cfg.d_model)
        self.mixer = mixer
        self.norm2 = _norm(cfg.norm, cfg.d_model)
        self.mlp = _channel_mixer(cfg)
        peri = self.position == "peri"
        self.norm1_out = _norm(cfg.norm, cfg.d_model) if peri else None
        self.norm2_out = _norm(cfg.norm, cfg.d_model) if peri else None

    def _enter(self, x: Tensor, norm: nn.Module) -> Tensor:
        return x if self.position == "post" else norm(x)

    def _leave(self, x: Tensor, y: Tensor, norm: nn.Module, norm_out: nn.Module | None) -> Tensor:
        if self.position == "post":
            return norm(x + y)
        return x + (y if norm_out is None else norm_out(y))

    def forward(self, x: Tensor) -> Tensor:
        x = self._leave(x, self.mixer(self._enter(x, self.norm1)), self.norm1, self.norm1_out)
        return self._channel(x)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        y, state = self.mixer.step(self._enter(x, self.norm1), state)
        return self._channel(self._leave(x, y, self.norm1, self.norm1_out)), state

    def prefill(self, x: Tensor) -> tuple[Tensor, Any]:
        """x (B, T, D) -> (forward(x), the mixer's state after x's T tokens).

        The mixer's own `prefill` when it has one (every registered variant does); a plugin
        mixer without one is stepped token by token (`prefill_by_steps`). Norms and the channel
        mixer act per token, so they run over the whole sequence as in `forward`.
        """
        h = self._enter(x, self.norm1)
        prefill = getattr(self.mixer, "prefill", None)
        y, state = prefill(h) if prefill is not None else prefill_by_steps(self.mixer, h)
        return self._channel(self._leave(x, y, self.norm1, self.norm1_out)), state

    def _channel(self, x: Tensor) -> Tensor:
        return self._leave(x, self.mlp(self._enter(x, self.norm2)), self.norm2, self.norm2_out)


def prefill_by_steps(mixer: Any, x: Tensor) -> tuple[Tensor, Any]:
    """`mixer.prefill(x)` for a mixer without one: `step` over x's T tokens from `init_state`."""
    state = mixer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    ys = []
    for x_t in x.split(1, dim=1):  # (B, 1, D) each
        y_t, state = mixer.step(x_t, state)
        ys.append(y_t)
    return torch.cat(ys, dim=1), state


class LanguageModel(nn.Module):
    """Token model of one variant: `forward` over a sequence, `step` one token against a state,
    `prefill` a sequence into logits and the state for decoding after it (one parallel pass).

    Backbone weights use GPT-2 init (normal 0.02; MLP output scaled by 1/sqrt(2 n_layers));
    each mixer initialises itself as its paper does. With n_loops > 1 the n_layers blocks run as
    a stack n_loops times (weights shared); each run of a block has its own decoding state, so
    the state list has n_loops * n_layers entries. `aux_loss` is the mean MoE balance loss of
    the last forward over block runs (0 for a dense model); training adds a small multiple of it.
    """

    def __init__(self, variant: Variant, backbone: BackboneConfig, mixer: Any) -> None:
        super().__init__()
        self.variant = variant.name
        self.config = _canonical(backbone, mixer)
        d, n = backbone.d_model, backbone.n_layers
        self.embed = nn.Embedding(backbone.vocab_size, d)
        self.blocks = nn.ModuleList(
            Block(variant.make_mixer(mixer, d, i, n), backbone) for i in range(n)
        )
        self.n_loops = backbone.n_loops
        # Post-LN already normalizes the last block's output
        self.norm = nn.Identity() if backbone.norm_position == "post" else _norm(backbone.norm, d)
        self.aux_loss = torch.zeros(())
        self.head = nn.Linear(d, backbone.vocab_size, bias=False)
        # a plugin mixer that does not say what it runs is recorded as plain eager PyTorch
        paths = {getattr(block.mixer, "kernel_path", "eager") for block in self.blocks}
        self.kernel_path = "+".join(sorted(paths))
        self._init_backbone(n)

    def _init_backbone(self, n_layers: int) -> None:
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        for block in self.blocks:
            mlps = block.mlp.experts if isinstance(block.mlp, MoE) else [block.mlp]
            for mlp in mlps:
                nn.init.normal_(mlp.fc.weight, std=0.02)
                nn.init.normal_(mlp.proj.weight, std=0.02 / math.sqrt(2 * n_layers))
            if isinstance(block.mlp, MoE):
                nn.init.normal_(block.mlp.router.weight, std=0.02)

    def _runs(self) -> Iterator[Block]:
        """The blocks in the order they run: the whole stack, n_loops times."""
        for _ in range(self.n_loops):
            yield from self.blocks

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens int64 (B, T) -> logits (B, T, V); sets `aux_loss`."""
        return self._parallel(tokens, states=None)

    def prefill(self, tokens: Tensor) -> tuple[Tensor, list[Any]]:
        """tokens int64 (B, T) -> (logits (B, T, V), decoding state) in one parallel pass.

        The logits are `forward(tokens)`'s and the state is the one `step` reaches from
        `init_state(B)` after the T tokens one at a time (same structure, equal up to float
        rounding), ready for further `step` calls; each block run prefills its own mixer
        state. T = 0 gives empty logits and `init_state(B)`. Sets `aux_loss` as forward does.
        """
        if tokens.shape[1] == 0:
            logits = self.head(self.norm(self.embed(tokens)))  # (B, 0, V)
            return logits, self.init_state(tokens.shape[0])
        states: list[Any] = []
        return self._parallel(tokens, states), states

    def _parallel(self, tokens: Tensor, states: list[Any] | None) -> Tensor:
        """forward over every block run; with `states`, prefill and append each run's state."""
        x = self.embed(tokens)  # (B, T, D)
        aux = []
        for block in self._runs():
            if states is None:
                x = block(x)
            else:
                x, state = block.prefill(x)
                states.append(state)
            if isinstance(block.mlp, MoE):
                aux.append(block.mlp.aux_loss)
        self.aux_loss = torch.stack(aux).mean() if aux else torch.zeros((), device=x.device)
        return self.head(self.norm(x))  # (B, T, V)

    def _param(self) -> Tensor:
        return self.embed.weight

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[Any]:
        """Empty per-layer mixer states; device and dtype default to the model's parameters'."""
        device = self._param().device if device is None else device
        dtype = self._param().dtype if dtype is None else dtype
        kw = {"device": device, "dtype": dtype}
        return [block.mixer.init_state(batch_size, **kw) for block in self._runs()]

    def step(self, tokens: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """tokens (B, 1) -> logits (B, 1, V) and the states after them."""
        x = self.embed(tokens)  # (B, 1, D)
        new_state = []
        for block, layer_state in zip(self._runs(), state, strict=True):
            x, layer_state = block.step(x, layer_state)
            new_state.append(layer_state)
        return self.head(self.norm(x)), new_state

    def num_params(self, active: bool = False) -> int:
        """Parameters (shared ones once); `active`: only those one token uses (top_k experts)."""
        total = sum(p.numel() for p in self.parameters())
        if not active:
            return total
        return total - sum(b.mlp.idle_params() for b in self.blocks if isinstance(b.mlp, MoE))

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Two AdamW groups, {"params", "weight_decay", "names"}: decayed, then not decayed.

        As nanoGPT and mamba's trainers do, weight decay acts on weight matrices only: every
        parameter with fewer than 2 dims (norm weights, biases, scalars), the token embedding
        (the head too when tied to it) and every parameter a module declares as dynamics in its
        class attribute `no_weight_decay` (names relative to that module; a submodule name
        covers its parameters: mamba's A_log and D, S4D's log_dt and A, ...) are not decayed.
        Decaying those pulls them towards 0, an arbitrary point of their space (A_log = 0 is
        one decay rate for every state), which moves the model's time scales rather than
        regularising it. Shared parameters appear once. A declared name that matches no
        parameter is a variant bug: TypeError.
        """
        named = dict(self.named_parameters())  # shared parameters once, under their first name
        keep = {n for n, p in named.items() if p.ndim < 2} | {"embed.weight"}
        keep |= self._declared_no_decay(named)
        decay, no_decay = [n for n in named if n not in keep], [n for n in named if n in keep]
        return [
            {"params": [named[n] for n in decay], "weight_decay": weight_decay, "names": decay},
            {"params": [named[n] for n in no_decay], "weight_decay": 0.0, "names": no_decay},
        ]

    def _declared_no_decay(self, named: dict[str, nn.Parameter]) -> set[str]:
        """Full names of the parameters modules declare in `no_weight_decay`."""
        out: set[str] = set()
        for prefix, module in self.named_modules():
            for rel in getattr(type(module), "no_weight_decay", ()):
                full = f"{prefix}.{rel}" if prefix else rel
                hits = {n for n in named if n == full or n.startswith(full + ".")}
                if not hits:
                    raise TypeError(
                        f"{self.variant}: {type(module).__name__}.no_weight_decay names "
                        f"{rel!r}, which is no parameter or submodule of it"
                    )
                out |= hits
        return out

    def compute_stats(self) -> dict[str, float]:
        """Active-compute facts of the last forward: the mean over blocks of each value a
        mixer's optional `stats()` reports (mod: the fraction of tokens routed through
        attention); {} when no mixer has one. With n_loops > 1 a block reports its last run."""
        values: dict[str, list[float]] = {}
        for block in self.blocks:
            stats = getattr(block.mixer, "stats", None)
            for key, value in (stats() if stats is not None else {}).items():
                values.setdefault(key, []).append(float(value))
        return {key: sum(v) / len(v) for key, v in sorted(values.items())}

    def state_size(self, seq_len: int) -> int:
        """Elements of decoding state per sequence after `seq_len` tokens, summed over layers."""
        return sum(block.mixer.state_size(seq_len) for block in self._runs())

    def state_bytes(self, seq_len: int, batch_size: int) -> int:
        """Bytes of decoding state for `batch_size` sequences, in the parameters' dtype."""
        return self.state_size(seq_len) * batch_size * self._param().element_size()
