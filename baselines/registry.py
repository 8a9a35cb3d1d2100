"""Every method of the paper in one table: `method=<name>` picks a `prepare(model, cfg) -> model`
that freezes, injects and marks trainable what the method trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

import lora

from .finetune import full_ft


class MethodError(ValueError):
    """A method that does not exist or does not apply to the model; the message says which do."""


@dataclass(frozen=True)
class Method:
    prepare: Callable[[nn.Module, dict], nn.Module]
    families: tuple[str, ...] | None = None  # lora.FAMILIES keys it applies to; None = any model


def _lora(model: nn.Module, cfg: dict) -> nn.Module:
    return lora.apply(model, lora.LoRAConfig.from_dict(cfg))


METHODS: dict[str, Method] = {
    "lora": Method(_lora, tuple(lora.FAMILIES)),
    "full_ft": Method(full_ft),
}


def check(name: str, model_type: str):
    """Refuse an unknown method, or one that does not apply to this model type, before any loading."""
    if name not in METHODS:
        raise MethodError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    families = METHODS[name].families
    if families is not None and model_type not in families:
        raise MethodError(f"method {name!r} does not support {model_type!r} models; it supports {', '.join(families)}")


def prepare(model: nn.Module, cfg: dict) -> nn.Module:
    """Apply the method named by cfg["name"] (the rest of cfg are its options)."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    check(name, getattr(model.config, "model_type", ""))
    return METHODS[name].prepare(model, cfg)
