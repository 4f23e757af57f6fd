"""Hugging Face transformers models as variants: ``hf:<model_type>`` and ``hf:<folder>``.

``hf:mamba`` is a randomly initialised ``AutoModelForCausalLM.from_config`` of the transformers
config class of that model type; ``hf:/some/folder`` (a path: it holds a ``/``) loads a local
folder's config.json (and its safetensors weights when present) without the network. Names are
resolved here, not registered one file each: ``backbone.get`` and the config entry points send
every ``hf:`` name to this module, and ``names()`` lists the model types below that the
installed transformers has. Config keys: the backbone's ``vocab_size``, ``d_model`` and
``n_layers`` (mapped onto the config's own names) and every scalar key of the config class;
keys that depend on the width (heads, intermediate sizes) default to None, meaning "derived
from d_model" (see ``DERIVED``). transformers is an optional dependency (the ``hf`` extra),
imported on first use; without it an ``hf:`` name is a one-line RegistryError.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any

from ._common import ConfigError, Variant, unknown_keys_message
from .configs import as_dict, build_config
from .registry import RegistryError

__all__ = ["PREFIX", "SUPPORTED", "is_hf", "names", "transformers_version", "variant"]

PREFIX = "hf:"
PAPERS = {
    "mamba": ("Mamba: Linear-Time Sequence Modeling with Selective State Spaces",),
    "mamba2": ("Transformers are SSMs (Mamba-2)",),
    "rwkv": ("RWKV: Reinventing RNNs for the Transformer Era",),
    "llama": ("LLaMA: Open and Efficient Foundation Language Models",),
    "gpt_neox": ("GPT-NeoX-20B: An Open-Source Autoregressive Language Model",),
    "jamba": ("Jamba: A Hybrid Transformer-Mamba Language Model",),
}
SUPPORTED = tuple(PAPERS)  # model types tested against the contract (tests/test_hf.py)
BACKBONE = {"vocab_size": "vocab_size", "d_model": "hidden_size", "n_layers": "num_hidden_layers"}
BACKBONE_DEFAULTS = {"vocab_size": 256, "d_model": 64, "n_layers": 2}  # as our backbone's
# config keys that are not the model's definition (output switches, bookkeeping)
SKIP = frozenset({"architectures", "transformers_version", "model_type", "return_dict", "dtype",
                  "torch_dtype", "output_hidden_states", "output_attentions", "use_cache",
                  "id2label", "label2id", "problem_type", "chunk_size_feed_forward",
                  "is_encoder_decoder", "_name_or_path", "tokenizer_class", "pad_token_id",
                  "bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id",
                  "cross_attention_hidden_size", "add_cross_attention", "is_decoder",
                  "finetuning_task", "prefix", "task_specific_params", "tf_legacy_loss",
                  "pruned_heads", "output_scores", "return_dict_in_generate"})
# defaults of ours that differ from the config class's: small models, and (rwkv) no in-place
# rescaling of weights when the model enters eval mode
OUR_DEFAULTS: dict[str, dict[str, Any]] = {
    "rwkv": {"rescale_every": 0},
    "mamba2": {"n_groups": 1},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2,
              "expert_layer_offset": 1, "num_experts": 4, "use_mamba_kernels": False},
}
HEADS = 4  # attention heads when not set: d_model must split into them


def _mamba2_heads(d: int, c: dict[str, Any]) -> int:
    inner, head_dim = c.get("expand", 2) * d, c.get("head_dim") or 16
    if inner % head_dim:
        raise ConfigError(f"expand * d_model = {inner} does not split into heads of "
                          f"head_dim={head_dim}")
    return inner // head_dim


def _rank(d: int, c: dict[str, Any]) -> int:
    return -(-d // 16)  # the "auto" dt rank of mamba: ceil(d_model / 16)


def _attention(kv: bool) -> dict[str, Callable[[int, dict[str, Any]], Any]]:
    out: dict[str, Callable[[int, dict[str, Any]], Any]] = {
        "num_attention_heads": lambda d, c: HEADS, "intermediate_size": lambda d, c: 4 * d}
    if kv:
        out["num_key_value_heads"] = lambda d, c: c["num_attention_heads"]
    return out


# keys set from the width when the user leaves them None (in this order, each only where the
# config class has it): (d_model, config so far) -> value
DERIVED: dict[str, dict[str, Callable[[int, dict[str, Any]], Any]]] = {
    "mamba": {"intermediate_size": lambda d, c: c["expand"] * d, "time_step_rank": _rank},
    "mamba2": {"head_dim": lambda d, c: 16, "num_heads": _mamba2_heads, "time_step_rank": _rank},
    "rwkv": {"attention_hidden_size": lambda d, c: d, "intermediate_size": lambda d, c: 4 * d},
    "llama": {**_attention(kv=True), "head_dim": lambda d, c: d // c["num_attention_heads"]},
    "gpt_neox": _attention(kv=False),
    "jamba": {**_attention(kv=True), "mamba_dt_rank": _rank},
}


def is_hf(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _transformers() -> Any:
    try:
        import transformers  # lazy: optional dependency, imported by hf: names only
    except ImportError:
        raise RegistryError(
            "hf: architectures need the optional dependency transformers, which is not "
            "installed (pip install 'archbench[hf]')") from None
    return transformers


def transformers_version() -> str | None:
    try:
        return str(_transformers().__version__)
    except RegistryError:
        return None


def names() -> list[str]:
    """``hf:<type>`` for the supported model types the installed transformers has."""
    if transformers_version() is None:
        return []
    from transformers import CONFIG_MAPPING  # lazy: optional dependency

    return [PREFIX + t for t in SUPPORTED if t in CONFIG_MAPPING]


def _is_path(spec: str) -> bool:
    return "/" in spec or spec.startswith((".", "~")) or "\\" in spec


def base_config(name: str) -> Any:
    """The transformers config object `name` starts from (defaults, or the folder's)."""
    spec = name[len(PREFIX):]
    tf = _transformers()
    if _is_path(spec):
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file():
            raise RegistryError(f"architecture {name!r}: no config.json in folder {str(folder)!r}")
        try:
            return tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            msg = " ".join(str(err).split())[:200]
            raise RegistryError(f"architecture {name!r}: cannot read its config: {msg}") from None
    causal = tf.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if spec not in tf.CONFIG_MAPPING or spec not in causal:
        close = [PREFIX + t for t in SUPPORTED if spec and spec in t] or names()
        raise RegistryError(f"unknown architecture {name!r}: transformers "
                            f"{tf.__version__} has no causal LM model type {spec!r}; "
                            f"supported: {', '.join(close)} (or hf:<folder with config.json>)")
    return tf.CONFIG_MAPPING[spec]()


def _annotation(value: Any) -> Any:
    return type(value) if isinstance(value, (bool, int, float, str)) else Any


@functools.cache
def variant(name: str) -> Variant:
    """The Variant entry of an ``hf:`` name (cached per process)."""
    cfg = base_config(name)
    spec, model_type = name[len(PREFIX):], cfg.model_type
    is_path = _is_path(spec)
    values = cfg.to_dict()
    hidden = set() if is_path else set(BACKBONE.values())
    keys = sorted(k for k, v in values.items() if k not in SKIP | hidden and not k.startswith("_")
                  and (v is None or isinstance(v, (bool, int, float, str))))
    ours = {} if is_path else {**OUR_DEFAULTS.get(model_type, {}),
                               **dict.fromkeys(DERIVED.get(model_type, {}))}
    derived = set() if is_path else set(DERIVED.get(model_type, {}))
    specs = [(k, Any if k in derived else _annotation(values[k]),
              field(default=ours.get(k, values[k]))) for k in keys]
    config_cls = make_dataclass(f"HF_{model_type}_Config", specs, frozen=True)
    tf = _transformers()
    cls = tf.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, "?")
    family = f"transformers {tf.__version__}, {cls}"
    doc = (f"{cls} from Hugging Face transformers {tf.__version__}, randomly initialised from "
           f"its config class{' (loaded from a local folder)' if is_path else ''}; decoding "
           "through the model's own cache API. Width keys left None are derived from d_model.")
    return Variant(name=name, family=family, version=1,
                   papers=PAPERS.get(model_type, (f"transformers {model_type}",)),
                   config_cls=config_cls, make_mixer=_no_mixer, doc=doc)


def _no_mixer(cfg: Any, d_model: int, layer_idx: int, n_layers: int) -> Any:
    raise TypeError("hf: variants are whole models, built by architectures._hf_model.build")


def config_keys(name: str) -> list[str]:
    own = [f for f in variant(name).config_cls.__dataclass_fields__]
    backbone = [] if _is_path(name[len(PREFIX):]) else list(BACKBONE)
    return sorted({*own, *backbone})


def check_keys(name: str, config: dict[str, Any]) -> None:
    allowed = config_keys(name)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: {unknown_keys_message(unknown, allowed)}")


def resolve_config(name: str, **config: Any) -> dict[str, Any]:
    """Every key of `name` filled (None: derived from the width), sorted; ConfigError on bad
    input, checked by building the transformers config from it."""
    check_keys(name, config)
    is_path = _is_path(name[len(PREFIX):])
    backbone = {} if is_path else {k: config.get(k, BACKBONE_DEFAULTS[k]) for k in BACKBONE}
    for key, value in backbone.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: config key {key!r} must be an integer >= 1; got {value!r}")
    own = build_config(variant(name).config_cls, {k: v for k, v in config.items()
                                                  if k not in BACKBONE}, name)
    resolved = dict(sorted({**backbone, **as_dict(own)}.items()))
    hf_kwargs(name, resolved)  # refuses what the config class refuses
    return resolved


def hf_kwargs(name: str, resolved: dict[str, Any]) -> dict[str, Any]:
    """The transformers config keyword arguments of a resolved config (derived keys filled)."""
    model_type = base_config(name).model_type
    kw = {BACKBONE.get(k, k): v for k, v in resolved.items()}
    d = kw.get("hidden_size", 0)
    try:
        for key, derive in DERIVED.get(model_type, {}).items():
            if key in kw and kw[key] is None:
                kw[key] = derive(d, kw)
        if model_type == "rwkv" and kw.get("num_hidden_layers", 2) < 2:
            raise ConfigError("n_layers must be >= 2 (transformers' RWKV init divides by "
                              "n_layers - 1)")
        heads = kw.get("num_attention_heads")
        if heads and d and (d % heads or (d // heads) % 2):
            raise ConfigError(f"d_model={d} does not split into {heads} heads of an even size")
        _transformers().AutoConfig.for_model(model_type, **kw)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    except (ValueError, TypeError, AssertionError, KeyError) as err:
        msg = " ".join(str(err).split())[:200]
        raise ConfigError(f"{name}: transformers refuses the config: {msg}") from None
    return kw


def state_size_probe(sizes: tuple[int, int, int], seq_len: int) -> int:
    """Elements after `seq_len` tokens from those after 0, 1 and 2 (constant or linear)."""
    s0, s1, s2 = sizes
    return s0 if seq_len == 0 else s1 + (seq_len - 1) * (s2 - s1)
