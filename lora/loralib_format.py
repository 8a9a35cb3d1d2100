"""microsoft/LoRA's released checkpoints (loralib 0.1.2 layers), read into this library's layers exactly.

loralib keeps one pair per module. `loralib.Linear` (RoBERTa, DeBERTa): ``NAME.lora_A`` (r, in) and
``NAME.lora_B`` (out, r). `loralib.MergedLinear` (GPT-2's fused ``c_attn`` with ``enable_lora=[True, False,
True]``): ``lora_A`` (r·k, in) and ``lora_B`` (d·k, r) for the k enabled slices, applied as a grouped conv1d,
so slice g has A rows [g·r, (g+1)·r) and B rows [g·d, (g+1)·d). Both scale by alpha / r. The files store
neither alpha nor the base model: alpha comes from the caller (the script that trained the checkpoint), never
from a guess, and the base model is the one the caller loads into. Task heads in the file (RoBERTa's
``classifier.*``, DeBERTa's ``pooler.*`` and ``classifier.*``) are loaded with the LoRA matrices.

The files are pickles (``.pt``, ``.bin``): they are read with ``torch.load(weights_only=True)`` only, which
refuses anything but tensors and plain containers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import LoRAConfig, LoRAError
from .families import family_of
from .positions import microsoft_deberta_positions
from .state import attach, load_tensors


def read_checkpoint(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loralib checkpoint, without a DDP ``module.`` prefix or microsoft's NLG wrapper key."""
    file = Path(file)
    if not file.is_file():
        raise LoRAError(f"no checkpoint file {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file or a pickle of objects: both are refused the same way
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LoRAError(f"{file} is not a checkpoint of plain tensors ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("model_state_dict"), dict):
        state = state["model_state_dict"]  # microsoft/LoRA's gpt2_ft.py saves {"model_state_dict": ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoRAError(f"{file} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_loralib(
    model: nn.Module,
    file: str | Path,
    alpha: float,
    fused: tuple[str, ...] = ("q", "v"),
    dropout: float = 0.0,
    microsoft_deberta: bool = True,
) -> nn.Module:
    """Load a microsoft/LoRA (loralib) checkpoint into a plain transformers model of its architecture.

    `alpha` is the checkpoint's lora_alpha (not in the file). `fused` names the enabled slices of a fused
    matrix in order (microsoft's GPT-2: q and v). Every tensor must find its place with its shape, or one
    LoRAError line names the first that does not. `microsoft_deberta`: a DeBERTa-v2 model projects its
    relative positions as microsoft's code does (`lora.positions`), as its checkpoints were trained.
    """
    if not alpha or alpha <= 0:
        raise LoRAError("a loralib checkpoint does not store alpha: give the alpha its training script used")
    file = Path(file)
    state = read_checkpoint(file)
    family = family_of(model)
    type_of = family.find(model, family.weight_types())
    modules = sorted(k.removesuffix(".lora_A") for k in state if k.endswith(".lora_A"))
    if not modules:
        raise LoRAError(f"{file} holds no loralib LoRA matrices (keys ending in .lora_A)")
    ranks, tensors, layers = {}, {}, set()
    for module in modules:
        A, B = state.pop(f"{module}.lora_A"), state.pop(f"{module}.lora_B", None)
        parts = type_of.get(module)
        if parts is None or B is None:
            why = "has no lora_B" if B is None else f"is not one of the {family.name} weight types of this model"
            raise LoRAError(f"{file}: {module} {why}")
        slices = [t for t in parts if t in fused] if len(parts) > 1 else list(parts)
        if len(parts) > 1 and (not slices or A.shape[0] % len(slices) or B.shape[0] % len(slices)):
            raise LoRAError(f"{file}: {module} holds A {tuple(A.shape)}, B {tuple(B.shape)}, which do not split "
                            f"into the slices {slices}; give fused= the enabled slices")  # fmt: skip
        r, d = A.shape[0] // len(slices), B.shape[0] // len(slices)
        for g, t in enumerate(slices):
            if ranks.setdefault(t, r) != r:
                raise LoRAError(f"{file} uses rank {r} and {ranks[t]} for {t!r}; one rank per weight type is read")
            tensors[f"{module}.lora_A.{t}"] = A[g * r : (g + 1) * r]
            tensors[f"{module}.lora_B.{t}"] = B[g * d : (g + 1) * d]
        layers.add(_block(module, family.blocks))
    heads = [n for n, _ in model.named_parameters() if n.split(".")[0] in family.heads]
    if heads and not state:
        raise LoRAError(f"{file} holds no task head for this model's {heads[0].split('.')[0]}: it would stay "
                        "randomly initialised; load a checkpoint saved with its head")  # fmt: skip
    n_blocks = family.num_blocks(dict(model.named_modules()))
    config = LoRAConfig(
        r=ranks, alpha={t: alpha for t in ranks}, dropout=dropout, init="loralib",
        layers=None if layers in (set(range(n_blocks)), {None}) else tuple(sorted(layers)),
        train_head=bool(state),
    )  # fmt: skip
    attach(model, config, source=file)
    tensors.update(state)  # the task head, as named in the model
    load_tensors(model, tensors, source=file, base_model="the model given", partial=not state)
    if microsoft_deberta and family.name == "deberta-v2":
        microsoft_deberta_positions(model)
    return model


def _block(module: str, blocks: str) -> int | None:
    head, _, rest = module.partition(f"{blocks}.")
    return int(rest.split(".", 1)[0]) if rest and rest.split(".", 1)[0].isdigit() else None
