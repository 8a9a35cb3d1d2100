"""microsoft/LoRA's released checkpoints (loralib 0.1.2 layers), read into this library's layers exactly.

loralib keeps one pair per module. `loralib.Linear` (RoBERTa, DeBERTa): ``NAME.lora_A`` (r, in) and
``NAME.lora_B`` (out, r). `loralib.MergedLinear` (GPT-2's fused ``c_attn`` with ``enable_lora=[True, False,
True]``): ``lora_A`` (r·k, in) and ``lora_B`` (d·k, r) for the k enabled slices, applied as a grouped conv1d,
so slice g has A rows [g·r, (g+1)·r) and B rows [g·d, (g+1)·d). Both scale by alpha / r. The files store
neither alpha nor the base model: alpha comes from the caller (the script that trained the checkpoint), never
from a guess, and the base model is the one the caller loads into. Task heads in the file (RoBERTa's
``classifier.*``, DeBERTa's ``pooler.*`` and ``classifier.*``) are loaded with the LoRA matrices.

A whole state dict (microsoft's end-of-training ``model.N.pt``, which `gpt2_ft.py` saves from the whole model;
an HF Trainer's ``pytorch_model.bin`` or ``model.safetensors``) is read too: its LoRA and head tensors are
taken, every other tensor must equal the model given's (`check_base`), and a log line says what was taken.

The files are pickles (``.pt``, ``.bin``): they are read with ``torch.load(weights_only=True)`` only, which
refuses anything but tensors and plain containers; or safetensors files.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch
from torch import nn

from .config import LoRAConfig, LoRAError
from .families import family_of, head_module
from .files import read_safetensors
from .model import lora_layers
from .positions import microsoft_deberta_positions
from .state import attach, load_tensors

log = logging.getLogger(__name__)


# Keys under which training scripts nest a model's state dict: microsoft/LoRA's gpt2_ft.py and many scripts
# ("model_state_dict"), Lightning ("state_dict"), DeepSpeed ("module"), fairseq and others ("model").
WRAPPERS = ("model_state_dict", "state_dict", "module", "model")


def read_checkpoint(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (a pickle read as plain tensors only, or a ``.safetensors`` file such as the
    HF Trainer's ``model.safetensors``), taken out of the training script's wrapper dict (`WRAPPERS`)."""
    file = Path(file)
    if not file.is_file():
        raise LoRAError(f"no checkpoint file {file}")
    if file.suffix == ".safetensors":
        return read_safetensors(file)[0]
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file or a pickle of objects: both are refused the same way
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LoRAError(f"{file} is not a checkpoint of plain tensors ({first})") from None
    for _ in range(len(WRAPPERS)):  # {"epoch": 3, "state_dict": {...}, "optimizer": {...}}, nested at most this deep
        if not isinstance(state, dict) or all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        state = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoRAError(f"{file} holds no state dict of tensors (looked under {', '.join(WRAPPERS)})")
    if not all(isinstance(k, str) for k in state):
        raise LoRAError(f"{file} holds a dict whose keys are not all parameter names")
    return state


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
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < math.inf:
        raise LoRAError(f"a loralib checkpoint does not store alpha: give the positive number its training script "
                        f"used (got {alpha!r})")  # fmt: skip
    file = Path(file)
    if any(True for _ in lora_layers(model)):  # its LoRA layers would be found as "weights" to adapt
        raise LoRAError(f"load_loralib reads {file.name} into a plain model, and this one already has LoRA layers: "
                        "give it the base model, or lora.unload(model) first")  # fmt: skip
    family = family_of(model)
    type_of = family.find(model, family.weight_types())
    base = plain_tensors(model)
    state = unprefixed(read_checkpoint(file), set(base) | set(type_of))
    modules = sorted(k.removesuffix(".lora_A") for k in state if k.endswith(".lora_A"))
    if not modules and any(".lora_A." in k for k in state):
        raise LoRAError(
            f"{file} is an adapter in this library's or PEFT's layout, not loralib's: load it with lora.load"
        )
    if not modules:
        raise LoRAError(f"{file} holds {len(state)} tensors but no loralib LoRA matrices (keys ending in .lora_A); "
                        "a model fine-tuned whole is loaded with load_state_dict, not as an adapter")  # fmt: skip
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
    if stray := next((k for k in state if k.endswith(".lora_B")), None):
        raise LoRAError(f"{file}: {stray} has no lora_A beside it; the checkpoint is incomplete")
    rest = {k: v for k, v in state.items() if not head_module(k, family.heads)}
    state = {k: v for k, v in state.items() if k not in rest}  # the task head
    if rest:  # a whole state dict (microsoft's end-of-training checkpoint, the HF Trainer's): its base must be ours
        taken = f"its {2 * len(modules)} LoRA matrices and {len(state)} head tensors"
        log.warning("%s is a whole state dict: took %s; %s", file, taken, check_base(rest, base, file))
    heads = [h for n, _ in model.named_parameters() if (h := head_module(n, family.heads))]
    if heads and not state:
        raise LoRAError(f"{file} holds no task head for this model's {heads[0]}: it would stay "
                        "randomly initialised; load a checkpoint saved with its head")  # fmt: skip
    n_blocks = family.num_blocks(dict(model.named_modules()))
    config = LoRAConfig(
        r=ranks, alpha={t: alpha for t in ranks}, dropout=dropout, init="kaiming_uniform",
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


# microsoft/LoRA's GPT-2 (examples/NLG/src/model.py) calls its output layer, tied to wte, lm_head.decoder.
ALIASES = {"lm_head.decoder.weight": "lm_head.weight"}
# Buffers a model computes from its config, which older code (microsoft's GPT-2: each block's causal mask
# attn.bias; older transformers: position_ids) kept in its state dict: compared only where the model has them.
COMPUTED = re.compile(r"(?:^|\.)(?:attn\.bias|attn\.masked_bias|position_ids)$")


def plain_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `model` by the name it has without LoRA (tied ones under each name)."""
    bases = {f"{name}.base.": f"{name}." for name, _ in lora_layers(model)}
    out = {}
    for name, t in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        head = next((b for b in bases if name.startswith(b)), None)
        out[name if head is None else bases[head] + name.removeprefix(head)] = t
    return out


def unprefixed(state: dict[str, torch.Tensor], known: set[str]) -> dict[str, torch.Tensor]:
    """`state` without the first name part that every key shares while dropping it names more of the model's
    tensors or modules: DDP's ``module.``, torch.compile's ``_orig_mod.``, a Lightning module's attribute."""

    def fits(keys) -> int:
        return sum(k in known or k.rsplit(".", 1)[0] in known for k in keys)

    while all("." in k for k in state) and len({k.split(".", 1)[0] for k in state}) == 1:
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if fits(stripped) <= fits(state):
            break
        state = stripped
    return state


def check_base(rest: dict[str, torch.Tensor], base: dict[str, torch.Tensor], file: Path) -> str:
    """Check that the non-LoRA, non-head tensors of a whole state dict are the model's own, and say so; any
    other tensor, shape or value is one LoRAError line."""
    skipped, unknown, differ = [], [], []
    for key, t in rest.items():
        ours = base.get(ALIASES.get(key, key))
        if COMPUTED.search(key) and (ours is None or ours.shape != t.shape):
            skipped.append(key)
        elif ours is None:
            unknown.append(key)
        elif ours.shape != t.shape:
            raise LoRAError(f"{file} does not fit this model: {key} is {tuple(t.shape)} in the file but "
                            f"{tuple(ours.shape)} in the model; it was trained on another model size")  # fmt: skip
        elif (gap := _gap(t, ours)) is not None:
            differ.append((gap, key))
    if unknown:
        raise LoRAError(f"{file} does not fit this model: {len(unknown)} tensors have no place in it "
                        f"(first: {unknown[0]}); it was trained on another architecture")  # fmt: skip
    if differ:
        worst = ", ".join(f"{k} by {g:.3g}" for g, k in sorted(differ, reverse=True)[:3])
        raise LoRAError(
            f"{file} is a whole state dict whose base differs from the model given in {len(differ)} "
            f"of {len(rest)} tensors (most: {worst}); load it into the base it was trained from"
        )
    note = f" ({len(skipped)} computed buffers such as {skipped[0]} not compared)" if skipped else ""
    return f"its other {len(rest) - len(skipped)} tensors equal the model given's{note}"


def _gap(saved: torch.Tensor, ours: torch.Tensor) -> float | None:
    """The largest difference between two tensors, or None if they are equal up to the coarser dtype's rounding."""
    if saved.numel() == 0:
        return None
    a, b = saved.detach().cpu().double(), ours.detach().cpu().double()
    gap = float((a - b).abs().max())
    if not (saved.is_floating_point() and ours.is_floating_point()):
        return None if gap == 0 else gap
    eps = max(torch.finfo(saved.dtype).eps, torch.finfo(ours.dtype).eps)
    return None if gap <= eps * max(1.0, float(b.abs().max())) else gap
