"""Every method of the paper in one table: `method=<name>` picks a `prepare(model, cfg) -> model`
that freezes, injects and marks trainable what the method trains (the task head always trains)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

import lora
from lora.files import read_safetensors, write_safetensors
from lora.state import check_model_type, load_tensors, trainable_state

from .adapters import add_adapters
from .common import MethodError, integer_options
from .finetune import bitfit, ft_top2, full_ft, head_only
from .prefix import DECODERS, add_prefix

ALL = tuple(lora.FAMILIES)
_PREFIX_KEYS = ("l_p", "l_i")


@dataclass(frozen=True)
class Method:
    prepare: Callable[[nn.Module, dict], nn.Module]
    families: tuple[str, ...] = ALL  # model types (lora.FAMILIES keys) it applies to
    why: str = ""  # said when a model type is refused


def _lora(model: nn.Module, cfg: dict) -> nn.Module:
    return lora.apply(
        model, lora.LoRAConfig.from_dict({k: v for k, v in cfg.items() if k not in ("name", *_PREFIX_KEYS)})
    )


def _lora_prefix(model: nn.Module, cfg: dict) -> nn.Module:
    """Appendix E: LoRA together with PrefixEmbed or PrefixLayer."""
    return add_prefix(_lora(model, cfg), {k: cfg[k] for k in ("name", *_PREFIX_KEYS) if k in cfg})


_DECODER_ONLY = "the paper uses prefix methods on decoders (GPT-2, GPT-3) only"
_BIASED = tuple(t for t in ALL if lora.FAMILIES[t].name != "llama")

METHODS: dict[str, Method] = {
    "lora": Method(_lora),
    "full_ft": Method(full_ft),
    "ft_top2": Method(ft_top2),
    "bitfit": Method(bitfit, _BIASED, "Llama-family models have no bias vectors"),
    "head_only": Method(head_only),
    "prefix_embed": Method(add_prefix, DECODERS, _DECODER_ONLY),
    "prefix_layer": Method(add_prefix, DECODERS, _DECODER_ONLY),
    "adapter_h": Method(add_adapters),
    "adapter_l": Method(add_adapters),
    "adapter_p": Method(add_adapters),
    "adapter_d": Method(add_adapters),
    "lora_prefix_embed": Method(_lora_prefix, DECODERS, _DECODER_ONLY),
    "lora_prefix_layer": Method(_lora_prefix, DECODERS, _DECODER_ONLY),
}


def check(name: str, model_type: str, options: dict | None = None, blocks: int | None = None):
    """Refuse an unknown method, one that does not apply to this model type, or (given its `options` and the
    model's number of `blocks`, where known) an integer option out of range, before any loading."""
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    method = METHODS[name]
    if model_type not in method.families:
        why = f" ({method.why})" if method.why else ""
        raise MethodError(
            f"method {name!r} does not support {model_type!r} models{why}; it supports {', '.join(method.families)}"
        )
    if options is not None:
        integer_options(name, options, blocks)


def prepare(model: nn.Module, cfg: dict) -> nn.Module:
    """Apply the method cfg["name"] with its options (the rest of cfg)."""
    check(cfg["name"], getattr(model.config, "model_type", ""))
    model = METHODS[cfg["name"]].prepare(model, dict(cfg))
    model.method_config = dict(cfg)  # saved with the trained parameters, to rebuild the model on load
    return model


def save(model: nn.Module, file, tensors: dict | None = None) -> None:
    """Write what the method trained (or `tensors`, gathered elsewhere), with its config in the header (read
    back by `load`)."""
    meta = {"method_config": json.dumps(model.method_config), "model_type": str(model.config.model_type)}
    write_safetensors(trainable_state(model) if tensors is None else tensors, meta, Path(file))


def load(model: nn.Module, file) -> nn.Module:
    """Prepare a base model with the method recorded in `file` and load its trained parameters."""
    file = Path(file)
    tensors, meta = read_safetensors(file)
    if "method_config" not in meta:
        raise MethodError(f"{file} records no method; it was not written by baselines.save")
    check_model_type(model, meta.get("model_type", ""), "?", file)
    prepare(model, json.loads(meta["method_config"]))
    load_tensors(model, tensors, source=file, base_model="?")
    return model
