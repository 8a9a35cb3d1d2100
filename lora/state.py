"""A model's trained tensors: which they are, and copying saved ones back in with every check.

Both adapter formats (ours in `lora.io`, PEFT's in `lora.peft_format`) and the methods' own files
(`baselines.save`) go through here, so a file that does not fit its model fails the same way everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .config import RENAMED_INITS, LoRAConfig, LoRAError
from .families import family_of, head_module
from .model import CONFIG_ATTR, apply, lora_layers


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (requires_grad), detached, contiguous, on the CPU."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def config_of(model: nn.Module) -> LoRAConfig:
    """The LoRA config a model was given by `lora.apply`, or a LoRAError saying it has none."""
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise LoRAError("the model has no LoRA config: call lora.apply(model, config) before lora.save")
    return config


def config_from_meta(meta: dict[str, str], source: Path) -> LoRAConfig:
    """The LoRA config recorded in an adapter file's header, or a LoRAError if it is damaged."""
    try:
        d = json.loads(meta["lora_config"])
        if not isinstance(d, dict):
            raise TypeError(f"a JSON {type(d).__name__}, not an object")
        if d.get("init") in RENAMED_INITS:  # written before the inits were renamed: the same init, its new name
            d["init"] = RENAMED_INITS[d["init"]]
        return LoRAConfig.from_dict(d)
    except LoRAError as err:
        raise LoRAError(f"{source}: {err}") from None
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError; wrong field types raise TypeError
        raise LoRAError(f"{source} has a damaged LoRA config in its header ({err}); the file is corrupted") from None


def attach(model: nn.Module, config: LoRAConfig, source: Path):
    """Apply `config` to a plain model, or check that a LoRA model already has that config."""
    current = getattr(model, CONFIG_ATTR, None)
    if current is None and not any(True for _ in lora_layers(model)):
        apply(model, config)
    elif current != config:
        raise LoRAError(
            f"the model already has LoRA with {current} but {source} holds {config}; "
            "load into a plain model (lora.unload first) or one with the same config"
        )


@torch.no_grad()
def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path, base_model: str, partial=False):
    """Copy `tensors` into the model's parameters of the same names, after checking names and shapes.

    Unless `partial`, every trainable parameter must be in the file: a file that lacks the task head
    or the biases is an error, not a silent half-load.
    """
    params = dict(model.named_parameters())
    unknown = [k for k in tensors if k not in params]
    if unknown:
        raise LoRAError(
            f"{source} does not fit this model: {len(unknown)} tensors have no place in it (first: {unknown[0]}); "
            f"it was trained on {base_model}"
        )
    for k, t in tensors.items():
        if params[k].shape != t.shape:
            raise LoRAError(
                f"{source} does not fit this model: {k} is {tuple(t.shape)} in the file but "
                f"{tuple(params[k].shape)} in the model; it was trained on {base_model}"
            )
        _check_values(k, t, source)
    _keep_pretrained_heads_the_file_lacks(model, tensors)
    params = dict(model.named_parameters())
    layers = list(lora_layers(model))
    wanted = [f"{n}.lora_{m}.{t}" for n, layer in layers for t in layer.slots for m in "AB"]
    if not partial:
        wanted += [n for n, p in params.items() if p.requires_grad]
    missing = sorted({k for k in wanted if k not in tensors})
    if missing:
        raise LoRAError(f"{source} lacks {len(missing)} trained tensors this model has (first: {missing[0]})")
    merged = [layer for _, layer in layers if layer.merged]
    for layer in merged:
        layer.unmerge()
    for k, t in tensors.items():
        params[k].copy_(t)
    for layer in merged:
        layer.merge()


def _keep_pretrained_heads_the_file_lacks(model: nn.Module, tensors: dict[str, torch.Tensor]):
    """Freeze the pretrained heads (BERT's pooler) of which the file holds nothing: they stay as loaded."""
    try:
        kept = family_of(model).pretrained_heads
    except LoRAError:
        return
    held = {head_module(k, kept) for k in tensors}
    modules = dict(model.named_modules())
    for name in (n for n in kept if n not in held and n in modules):
        modules[name].requires_grad_(False)


def _check_values(name: str, t: torch.Tensor, source: Path):
    """A trained tensor is floating point and finite: an integer one (quantized, or not weights at all) would be
    cast silently, a NaN or infinity would make every output NaN."""
    if not t.is_floating_point():
        raise LoRAError(f"{source}: {name} holds {t.dtype} values, not floating-point weights; the file is not an "
                        "adapter of plain weights")  # fmt: skip
    if not bool(torch.isfinite(t).all()):
        raise LoRAError(f"{source}: {name} holds NaN or infinite values; the training that wrote it diverged")


def base_model_name(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")


def check_model_type(model: nn.Module, model_type: str, base_model: str, source: Path):
    ours = str(getattr(getattr(model, "config", None), "model_type", ""))
    if model_type and ours != model_type:
        raise LoRAError(
            f"{source} was trained on a {model_type} model ({base_model or 'unnamed'}) but this model is {ours}; "
            "load it into the architecture it was trained on"
        )
