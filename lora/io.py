"""Adapter files: only what was trained, in safetensors, with the LoRA config beside it.

Our format is one ``.safetensors`` file whose header metadata holds the config (so the file alone is
enough to load), plus a ``.json`` of the same name for people to read. PEFT's format (a folder with
``adapter_model.safetensors`` and ``adapter_config.json``) is read and written by `lora.peft_format`.
Every write goes to a temporary file in the same folder and is renamed into place, so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import LoRAConfig, LoRAError
from .model import CONFIG_ATTR, apply, lora_layers

ADAPTER_FILE = "adapter.safetensors"
FORMAT_VERSION = "1"


def save(model: nn.Module, path: str | os.PathLike, format: str = "lora") -> Path:
    """Write the trained parameters of a LoRA model; returns the file (or PEFT folder) written.

    ``path`` is a ``.safetensors`` file or a folder (then ``folder/adapter.safetensors``);
    ``format="peft"`` writes PEFT's folder layout instead, loadable by ``peft.PeftModel``.
    """
    if format == "peft":
        from .peft_format import save_peft

        return save_peft(model, path)
    if format != "lora":
        raise LoRAError(f"unknown adapter format {format!r}; use 'lora' or 'peft'")
    config = _config_of(model)
    file = _adapter_file(Path(path))
    tensors = trainable_state(model)
    meta = {
        "lora_config": json.dumps(config.to_dict()),
        "base_model": base_model_name(model),
        "model_type": str(getattr(model.config, "model_type", "")),
        "format_version": FORMAT_VERSION,
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
        from .peft_format import load_peft

        return load_peft(model, path)
    file = _adapter_file(path)
    tensors, meta = read_safetensors(file)
    if "lora_config" not in meta:
        raise LoRAError(f"{file} has no LoRA config in its header; it was not written by lora.save")
    config = config_from_meta(meta, file)
    check_model_type(model, meta.get("model_type", ""), meta.get("base_model", "?"), file)
    attach(model, config, source=file)
    load_tensors(model, tensors, source=file, base_model=meta.get("base_model", "?"))
    return model


def config_from_meta(meta: dict[str, str], source: Path) -> LoRAConfig:
    """The LoRA config recorded in an adapter file's header, or a LoRAError if it is damaged."""
    try:
        d = json.loads(meta["lora_config"])
        if not isinstance(d, dict):
            raise TypeError(f"a JSON {type(d).__name__}, not an object")
        return LoRAConfig.from_dict(d)
    except LoRAError as err:
        raise LoRAError(f"{source}: {err}") from None
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError; wrong field types raise TypeError
        raise LoRAError(f"{source} has a damaged LoRA config in its header ({err}); the file is corrupted") from None


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (requires_grad), detached, contiguous, on the CPU."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


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


def base_model_name(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or "")


def check_model_type(model: nn.Module, model_type: str, base_model: str, source: Path):
    ours = str(getattr(getattr(model, "config", None), "model_type", ""))
    if model_type and ours != model_type:
        raise LoRAError(
            f"{source} was trained on a {model_type} model ({base_model or 'unnamed'}) but this model is {ours}; "
            "load it into the architecture it was trained on"
        )


def _config_of(model: nn.Module) -> LoRAConfig:
    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise LoRAError("the model has no LoRA config: call lora.apply(model, config) before lora.save")
    return config


def _adapter_file(path: Path) -> Path:
    if path.suffix == ".safetensors":
        return path
    if path.suffix:
        raise LoRAError(f"{path}: an adapter path is a .safetensors file or a folder")
    return path / ADAPTER_FILE


def read_safetensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not file.is_file():
        raise LoRAError(f"no adapter file {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # safetensors raises several types for truncated or garbled files
        raise LoRAError(
            f"{file} is not a readable safetensors file ({err}); it may be truncated or corrupted"
        ) from None


def write_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], file: Path):
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", **metadata})


def write_text(text: str, file: Path):
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file) as tmp, open(tmp, "w") as f:
        f.write(text)


TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class atomic_path:
    """Yield a temporary path beside `file`; on success fsync and rename it over `file`.

    A reader (or a run resumed after a kill) sees the old file or the new one, never half of one;
    a kill leaves at most a hidden ``.NAME.*.tmp`` file, which `RunFolder.open` sweeps away.
    """

    def __init__(self, file: Path):
        self.file = file

    def __enter__(self) -> str:
        fd, self.tmp = tempfile.mkstemp(dir=self.file.parent, prefix=f".{self.file.name}.", suffix=TMP_SUFFIX)
        os.close(fd)
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; results are for the whole team
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            os.unlink(self.tmp)
            return False
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.file)
        return False
