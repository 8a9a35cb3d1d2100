"""Adapter files: only what was trained, in safetensors, with the LoRA config beside it.

Our format is one ``.safetensors`` file whose header metadata holds the config (so the file alone is
enough to load), plus a ``.json`` of the same name for people to read. PEFT's format (a folder with
``adapter_model.safetensors`` and ``adapter_config.json``) is read and written by `lora.peft_format`.
Every write goes through `lora.files` (a temporary renamed into place), so a reader never sees half a
file; the checks on loading are `lora.state`'s, shared by every format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from .config import LoRAError
from .files import read_safetensors, write_safetensors, write_text
from .model import lora_layers
from .peft_format import load_peft, save_peft
from .positions import MICROSOFT_DEBERTA_ATTR, microsoft_deberta_positions, remove_microsoft_positions
from .state import attach, base_model_name, check_model_type, config_from_meta, config_of, load_tensors, trainable_state

ADAPTER_FILE = "adapter.safetensors"
FORMAT_VERSION = "1"


def save(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "lora",
    base_model: str | None = None,
    tensors: dict | None = None,
) -> Path:
    """Write the trained parameters of a LoRA model; returns the file (or PEFT folder) written.

    ``path`` is a ``.safetensors`` file or a folder (then ``folder/adapter.safetensors``);
    ``format="peft"`` writes PEFT's folder layout instead, loadable by ``peft.PeftModel``. ``base_model`` names
    the base model in the file (a hub id or a config name); by default the model's own name, and only the last
    part of it when that is a local folder (a path on one machine means nothing on another). ``tensors``: the
    trained tensors when the model does not hold them whole (gathered from processes that partition them).
    """
    if format == "peft":
        return save_peft(model, path)
    if format != "lora":
        raise LoRAError(f"unknown adapter format {format!r}; use 'lora' or 'peft'")
    config = config_of(model)
    file = _adapter_file(Path(path))
    tensors = trainable_state(model) if tensors is None else tensors
    meta = {
        "lora_config": json.dumps(config.to_dict()),
        "base_model": base_model or _portable(base_model_name(model)),
        "model_type": str(getattr(model.config, "model_type", "")),
        "format_version": FORMAT_VERSION,
        **({"relative_positions": "microsoft"} if getattr(model, MICROSOFT_DEBERTA_ATTR, False) else {}),
    }
    write_safetensors(tensors, meta, file)
    sidecar = {
        **{k: v for k, v in meta.items() if k != "lora_config"},
        "lora_config": config.to_dict(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    write_text(json.dumps(sidecar, indent=2) + "\n", file.with_suffix(".json"))
    return file


def load(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an adapter (ours or PEFT's) into a model; a plain base model gets LoRA applied first.

    Fails with a `LoRAError` naming the problem when the file is missing or corrupted, or was
    trained on another architecture or shape.
    """
    path = Path(path)
    if not path.exists():
        raise LoRAError(f"no adapter at {path}: give an adapter .safetensors file or the folder holding it")
    if path.is_dir() and (path / "adapter_config.json").exists():
        return load_peft(model, path)
    file = _adapter_file(path)
    tensors, meta = read_safetensors(file)
    if "lora_config" not in meta:
        raise LoRAError(f"{file} has no LoRA config in its header: {_what_else(file, tensors)}")
    config = config_from_meta(meta, file)
    check_model_type(model, meta.get("model_type", ""), meta.get("base_model", "?"), file)
    microsoft = meta.get("relative_positions") == "microsoft"
    if microsoft and any(layer.merged for _, layer in lora_layers(model)):  # before any tensor is replaced
        raise LoRAError(f"{file} projects DeBERTa's relative positions with W0 alone, which a merged model no longer "
                        "holds apart: lora.unmerge(model) first")  # fmt: skip
    attach(model, config, source=file)
    load_tensors(model, tensors, source=file, base_model=meta.get("base_model", "?"))
    if microsoft:  # a microsoft/LoRA DeBERTa checkpoint, saved by us
        microsoft_deberta_positions(model)
    else:  # loaded over an adapter that had it: the handling is the adapter's, not the model's
        remove_microsoft_positions(model)
    return model


def _adapter_file(path: Path) -> Path:
    if path.suffix == ".safetensors":
        return path
    if path.suffix in (".pt", ".bin", ".pth"):
        raise LoRAError(
            f"{path} is a pickled checkpoint (microsoft/LoRA, loralib): read it with "
            "lora.load_loralib(model, file, alpha=...), alpha being its training script's (the file has none)"
        )
    if path.suffix:
        raise LoRAError(f"{path}: an adapter path is a .safetensors file or a folder")
    return path / ADAPTER_FILE


def _what_else(file: Path, tensors: dict) -> str:
    """What an adapter-like safetensors file without our header is, and how to load it."""
    if any(k.endswith((".lora_A.weight", ".lora_embedding_A")) for k in tensors):
        return "it is PEFT's adapter weights; give lora.load the folder holding it and its adapter_config.json"
    if any(k.endswith(".lora_A") for k in tensors):
        return (
            "it is a loralib state dict (microsoft/LoRA's layers, saved whole by the HF Trainer): read it with "
            "lora.load_loralib(model, file, alpha=...), alpha being its training script's"
        )
    return "it was not written by lora.save and holds no LoRA matrices"


def _portable(name: str) -> str:
    """A model name that means the same on any machine: a local folder's last part, a hub id as it is.

    >>> _portable("/root/.cache/lora-repro/SmolLM2-135M"), _portable("gpt2-medium")
    ('SmolLM2-135M', 'gpt2-medium')
    """
    return Path(name).name if Path(name).is_absolute() else name
