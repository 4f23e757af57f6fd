"""The `LanguageModel` contract around a transformers causal LM (see ``architectures._hf``).

Decoding runs through the model's own cache API: ``cache`` (a ``DynamicCache`` whose layers are
``DynamicLayer`` keys/values or ``LinearAttentionLayer`` conv/recurrent states: llama, gpt_neox,
mamba, mamba2, jamba) or ``state`` (rwkv's list of five tensors). The state handed out is an
`HFState`: a list with one flat dict of tensors per layer ("k"/"v", "conv0"/"ssm0", "s0".."s4";
leading dim the batch) that also carries the live cache object, so `step` continues it without
copying; a plain list of such dicts is turned back into a cache. `step` may update the tensors
of the state it is given in place (the cache's recurrent states are static buffers).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import _hf, _hf_rwkv
from ._common import ConfigError, state_numel

__all__ = ["HFLanguageModel", "HFState", "build"]


class HFState(list):
    """One dict of tensors per layer, plus the transformers cache (or rwkv state) behind it."""

    cache: Any = None


def _fused_available(model_type: str) -> bool:
    wanted = {"mamba": ("mamba_ssm", "causal_conv1d"), "mamba2": ("mamba_ssm", "causal_conv1d"),
              "jamba": ("mamba_ssm", "causal_conv1d"), "rwkv": ("ninja",)}.get(model_type)
    return wanted is not None and all(importlib.util.find_spec(m) for m in wanted)


def kernel_path(model: Any, device: torch.device) -> str:
    """What runs: the fused kernels (CUDA with mamba_ssm/causal_conv1d), else the slow path;
    the attention implementation for attention models; then the library and class."""
    tf, cfg = _hf._transformers(), model.config
    if cfg.model_type in ("mamba", "mamba2", "jamba", "rwkv"):
        fused = device.type == "cuda" and _fused_available(cfg.model_type)
        fused = fused and getattr(cfg, "use_mamba_kernels", True)
        path = "hf-fused" if fused else "hf-slow-path"
    else:
        path = f"hf-{getattr(cfg, '_attn_implementation', None) or 'eager'}"
    return f"{path}, transformers {tf.__version__}, {type(model).__name__}"


def _indexed(states: Any) -> list[tuple[int, Any]]:
    """(state index, tensor) of a linear-attention layer's states (a dict or a list)."""
    return sorted(states.items()) if isinstance(states, dict) else list(enumerate(states))


def _layer_dict(layer: Any) -> dict[str, Tensor]:
    if hasattr(layer, "recurrent_states"):
        out = {f"conv{i}": t for i, t in _indexed(layer.conv_states) if isinstance(t, Tensor)}
        out.update({f"ssm{i}": t for i, t in _indexed(layer.recurrent_states)
                    if isinstance(t, Tensor)})
        return out
    keys = getattr(layer, "keys", None)
    if keys is None or keys.numel() == 0:
        return {}
    return {"k": keys, "v": layer.values}


def _to_state(cache: Any, n_layers: int) -> HFState:
    if cache is None:
        state = HFState({} for _ in range(n_layers))
    elif isinstance(cache, (list, tuple)):  # rwkv: five (B, D, n_layers) tensors
        state = HFState({f"s{j}": t[..., i] for j, t in enumerate(cache)} for i in range(n_layers))
    else:
        state = HFState(_layer_dict(layer) for layer in cache.layers)
    state.cache = cache
    return state


def _from_dicts(model: Any, state: list[dict[str, Tensor]]) -> Any:
    """A transformers cache holding the tensors of a plain list of layer dicts."""
    if not any(state):
        return None
    if model.config.model_type == "rwkv":
        return [torch.stack([d[f"s{j}"] for d in state], dim=-1) for j in range(5)]
    from transformers import DynamicCache  # lazy: optional dependency

    cache = DynamicCache(config=model.config)
    for layer, d in zip(cache.layers, state, strict=True):
        if "k" in d:
            layer.update(d["k"].clone(), d["v"].clone())
        for key, value in sorted(d.items()):
            if key.startswith("conv"):
                layer.update_conv_state(value.clone(), state_idx=int(key[4:]))
            elif key.startswith("ssm"):
                layer.update_recurrent_state(value.clone(), state_idx=int(key[3:]))
    return cache


class HFLanguageModel(nn.Module):
    """forward/prefill/step/init_state/state_size of a transformers causal LM."""

    n_loops = 1

    def __init__(self, name: str, config: dict[str, Any], hf: nn.Module) -> None:
        super().__init__()
        self.variant = name
        self.config = config
        self.hf = hf
        self.embed = hf.get_input_embeddings()
        self.head = hf.get_output_embeddings()
        self.n_layers = int(hf.config.num_hidden_layers)
        self.aux_loss = torch.zeros(())
        self._sizes: tuple[int, int, int] | None = None

    @property
    def kernel_path(self) -> str:
        return kernel_path(self.hf, self.embed.weight.device)

    def _state_key(self) -> str:
        return "state" if self.hf.config.model_type == "rwkv" else "cache"

    def _run(self, tokens: Tensor, cache: Any, use_cache: bool) -> tuple[Tensor, Any]:
        kw: dict[str, Any] = {"input_ids": tokens, "use_cache": use_cache}
        if cache is not None:
            kw[self._state_key()] = cache
        out = self.hf(**kw)
        return out.logits, out.get(self._state_key()) if use_cache else None

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens int64 (B, T) -> logits (B, T, V)."""
        return self._run(tokens, None, use_cache=False)[0]

    def init_state(self, batch_size: int, *, device: torch.device | None = None,
                   dtype: torch.dtype | None = None) -> HFState:
        """Empty per-layer states: the model's cache starts lazily on the first token."""
        return _to_state(None, self.n_layers)

    def prefill(self, tokens: Tensor) -> tuple[Tensor, HFState]:
        if tokens.shape[1] == 0:
            logits = self.head(self.embed(tokens))
            return logits, self.init_state(tokens.shape[0])
        logits, cache = self._run(tokens, None, use_cache=True)
        return logits, _to_state(cache, self.n_layers)

    def step(self, tokens: Tensor, state: list[dict[str, Tensor]]) -> tuple[Tensor, HFState]:
        """tokens (B, 1) -> logits (B, 1, V) and the state after them (see the module doc)."""
        cache = state.cache if isinstance(state, HFState) else _from_dicts(self.hf, state)
        logits, cache = self._run(tokens, cache, use_cache=True)
        return logits, _to_state(cache, self.n_layers)

    def num_params(self, active: bool = False) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        named = dict(self.named_parameters())
        keep = {n for n, p in named.items() if p.ndim < 2 or p is self.embed.weight}
        decay, no_decay = [n for n in named if n not in keep], [n for n in named if n in keep]
        return [
            {"params": [named[n] for n in decay], "weight_decay": weight_decay, "names": decay},
            {"params": [named[n] for n in no_decay], "weight_decay": 0.0, "names": no_decay},
        ]

    def compute_stats(self) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def _probe(self) -> tuple[int, int, int]:
        """State elements per sequence after 0, 1 and 2 tokens (measured once, on the CPU
        when the model is on the meta device)."""
        if self._sizes is None:
            model = self
            if self.embed.weight.device.type == "meta":
                model = build(self.variant, **self.config)
            device = model.embed.weight.device
            tokens = torch.zeros(1, 2, dtype=torch.long, device=device)
            was_training = model.training
            model.eval()
            sizes = [state_numel(model.init_state(1))]
            sizes += [state_numel(model.prefill(tokens[:, :n])[1]) for n in (1, 2)]
            model.train(was_training)
            self._sizes = (sizes[0], sizes[1], sizes[2])
        return self._sizes

    def state_size(self, seq_len: int) -> int:
        """Elements of decoding state per sequence after `seq_len` tokens: measured after 0, 1
        and 2 tokens and extended linearly (constant for recurrent models, linear for KV)."""
        return _hf.state_size_probe(self._probe(), seq_len)

    def state_bytes(self, seq_len: int, batch_size: int) -> int:
        return self.state_size(seq_len) * batch_size * self.embed.weight.element_size()


def _load(name: str, resolved: dict[str, Any]) -> nn.Module:
    tf = _hf._transformers()
    spec = name[len(_hf.PREFIX):]
    if _hf._is_path(spec):
        kw = {k: v for k, v in resolved.items() if k not in _hf.BACKBONE}
        weights = any(p.suffix == ".safetensors" for p in _folder(spec).iterdir())
        if weights:
            return tf.AutoModelForCausalLM.from_pretrained(
                str(_folder(spec)), local_files_only=True, **kw)
        cfg = tf.AutoConfig.from_pretrained(str(_folder(spec)), local_files_only=True, **kw)
    else:
        cfg = tf.AutoConfig.for_model(_hf.base_config(name).model_type,
                                      **_hf.hf_kwargs(name, resolved))
    return tf.AutoModelForCausalLM.from_config(cfg)


def _model(name: str, resolved: dict[str, Any]) -> nn.Module:
    model = _load(name, resolved)
    return _hf_rwkv.patch(model) if model.config.model_type == "rwkv" else model


def _folder(spec: str) -> Path:
    return Path(spec).expanduser()


def build(name: str, **config: Any) -> HFLanguageModel:
    """An `hf:` model, initialised from the global torch RNG as the caller seeded."""
    resolved = _hf.resolve_config(name, **config)
    try:
        hf = _model(name, resolved)
    except (ValueError, TypeError, AssertionError, RuntimeError) as err:
        if "meta" in str(err):
            raise
        msg = " ".join(str(err).split())[:200]
        raise ConfigError(f"{name}: transformers cannot build it: {msg}") from None
    return HFLanguageModel(name, resolved, hf)
