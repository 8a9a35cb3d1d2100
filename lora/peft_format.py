"""Reading and writing HF PEFT's adapter format, so adapters move between PEFT and this library.

PEFT keeps one (A, B) pair per module. GPT-2's fused ``c_attn`` with separate q and v updates is
written as one pair of rank r_q + r_v whose B is block-structured (zero rows for k), which PEFT runs
exactly; our own config rides along in the file's header so the split comes back exactly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from torch import nn

from .config import LoRAConfig, LoRAError
from .families import family_of, head_module
from .files import read_safetensors, write_safetensors, write_text
from .loralib_format import read_checkpoint
from .model import lora_layers
from .positions import remove_microsoft_positions, w0_position_sites
from .state import attach, base_model_name, check_model_type, config_from_meta, config_of, load_tensors, trainable_state

WEIGHTS = "adapter_model.safetensors"
PICKLED = "adapter_model.bin"
CONFIG = "adapter_config.json"
PREFIX = "base_model.model."

# adapter_config.json fields we read; any other field must hold its "off" value (None, False, {}, ...).
_READ = {
    "peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "rank_pattern", "alpha_pattern",
    "target_modules", "lora_dropout", "bias", "fan_in_fan_out", "use_rslora", "modules_to_save",
    "init_lora_weights", "inference_mode", "layers_to_transform", "layers_pattern", "revision",
    "peft_version", "auto_mapping", "exclude_modules", "ensure_weight_tying",
}  # fmt: skip
_HARMLESS = {"megatron_core": "megatron.core", "qalora_group_size": 16}


def _keys(layer) -> tuple[str, str]:
    return ("lora_embedding_A", "lora_embedding_B") if layer.kind == "embedding" else ("lora_A.weight", "lora_B.weight")


def save_peft(model: nn.Module, folder) -> Path:
    """Write `folder/adapter_model.safetensors` + `folder/adapter_config.json` in PEFT's layout."""
    config = config_of(model)
    folder = Path(folder)
    if folder.suffix:
        raise LoRAError(f"{folder}: the PEFT format is a folder; give a folder path")
    if w0_position_sites(model):  # PEFT has no such option: its DeBERTa projects positions with W0 + ΔW
        raise LoRAError(
            "this DeBERTa model projects its relative positions with W0 alone (microsoft's handling), which PEFT "
            "cannot represent (it would use W0 + ΔW); save it in this library's format (format='lora')"
        )
    tensors, ranks, alphas = {}, {}, {}
    for name, layer in lora_layers(model):
        types = list(layer.slots)
        A = torch.cat([layer.lora_A[t].detach().cpu() for t in types])
        scales = {layer.slots[t].scale for t in types}
        peft_scale = scales.pop() if len(scales) == 1 else 1.0
        out = layer.base.weight.shape[0 if layer.kind == "linear" else 1]
        B = torch.zeros(out, A.shape[0], dtype=A.dtype)
        col = 0
        for t in types:
            s = layer.slots[t]
            block = layer.lora_B[t].detach().cpu()
            B[s.offset : s.offset + s.width, col : col + s.rank] = _rescale(block, s.scale / peft_scale)
            col += s.rank
        key_a, key_b = _keys(layer)
        tensors[f"{PREFIX}{name}.{key_a}"] = A.contiguous()
        tensors[f"{PREFIX}{name}.{key_b}"] = B
        ranks[name] = A.shape[0]
        alphas[name] = peft_scale * A.shape[0]
    for pname, p in trainable_state(model).items():
        if ".lora_A." in pname or ".lora_B." in pname:
            continue
        path, leaf = pname.rsplit(".", 1)
        path = path[: -len(".base")] + ".base_layer" if path.endswith(".base") else path
        tensors[f"{PREFIX}{path}.{leaf}"] = p
    # PEFT names a module to save by the end of its path ("pooler" saves bert.pooler)
    heads = sorted({h.rsplit(".", 1)[-1] for n, p in model.named_parameters()
                    if p.requires_grad and (h := head_module(n, family_of(model).heads))})  # fmt: skip
    common_r = max(ranks.values(), default=config.rank(config.targets[0]))
    peft_config = {
        "peft_type": "LORA",
        "task_type": _task_type(model),
        "base_model_name_or_path": base_model_name(model) or None,
        "r": common_r,
        "lora_alpha": alphas.get(next(iter(alphas), None), common_r),
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "target_modules": sorted(ranks),
        "lora_dropout": config.dropout,
        "bias": config.bias,
        "fan_in_fan_out": any(layer.kind == "conv1d" for _, layer in lora_layers(model)),
        "use_rslora": False,  # scales are exact per module through alpha_pattern
        "modules_to_save": heads or None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    meta = {"lora_config": json.dumps(config.to_dict()), "model_type": str(model.config.model_type)}
    write_safetensors(tensors, meta, folder / WEIGHTS)
    write_text(json.dumps(peft_config, indent=2) + "\n", folder / CONFIG)
    return folder


def load_peft(model: nn.Module, folder: Path) -> nn.Module:
    """Load a PEFT LoRA adapter folder (written by PEFT or by `save_peft`) into a model."""
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoRAError(f"{folder / CONFIG} is not a readable JSON file ({err})") from None
    _check_types(cfg, folder / CONFIG)
    _check_supported(cfg, folder / CONFIG)
    if (folder / WEIGHTS).exists():
        tensors, meta = read_safetensors(folder / WEIGHTS)
    elif (folder / PICKLED).exists():  # PEFT's safe_serialization=False; read as plain tensors only, as PEFT does
        tensors, meta = read_checkpoint(folder / PICKLED), {}
    else:
        raise LoRAError(f"{folder} has {CONFIG} but neither {WEIGHTS} nor {PICKLED}; copy the adapter's weights too")
    if "lora_config" in meta:
        check_model_type(model, meta.get("model_type", ""), str(cfg.get("base_model_name_or_path")), folder)
        config = config_from_meta(meta, folder / WEIGHTS)
    else:
        config = _infer_config(model, cfg, tensors, folder)
    attach(model, config, source=folder)
    ours = {}
    for name, layer in lora_layers(model):
        key_a, key_b = _keys(layer)
        A, B = tensors.pop(f"{PREFIX}{name}.{key_a}", None), tensors.pop(f"{PREFIX}{name}.{key_b}", None)
        if A is None or B is None:
            raise LoRAError(f"{folder} has no LoRA weights for {name}; it does not fit this model")
        peft_scale = _peft_scale(cfg, name, A.shape[0])
        # PEFT's one pair for a fused matrix (GPT-2's c_attn) shares A among the q, k, v slices and stacks their B
        # rows: each slice gets A whole and its rows of B. Ours (and what save_peft writes) stacks the slices' A.
        shared = len(layer.slots) > 1 and A.shape[0] != sum(s.rank for s in layer.slots.values())
        row = 0
        for t, s in layer.slots.items():
            cols = slice(0, A.shape[0]) if shared else slice(row, row + s.rank)
            ours[f"{name}.lora_A.{t}"] = A[cols]
            ours[f"{name}.lora_B.{t}"] = _rescale(B[s.offset : s.offset + s.width, cols], peft_scale / s.scale)
            row += s.rank
    for key, t in sorted(tensors.items(), key=lambda item: _WRAPPED not in item[0]):  # as PEFT: the plain key wins
        if (path := _our_name(key)) is not None:
            ours[path] = t
    if not cfg.get("ensure_weight_tying"):
        _untie_saved_embedding(model, ours)
    load_tensors(model, ours, source=folder, base_model=str(cfg.get("base_model_name_or_path")))
    remove_microsoft_positions(model)  # PEFT projects DeBERTa's positions with W0 + ΔW, whatever was loaded before
    return model


_WRAPPED = ".modules_to_save."


def _our_name(key: str) -> str | None:
    """Our parameter name for a tensor of a PEFT adapter file; None for the untrained copy that PEFT keeps of a
    module in `modules_to_save` (``NAME.original_module.*``, used only with the adapter off). A file with
    ``bias="all"`` also holds a module's trained copy under ``NAME.modules_to_save.ADAPTER.*`` beside ``NAME.*``;
    PEFT loads the latter into the copy, and so do we."""
    path = key.removeprefix(PREFIX)
    if ".original_module." in path:
        return None
    return re.sub(rf"{re.escape(_WRAPPED)}[^.]+\.", ".", path).replace(".base_layer.", ".base.")


def _untie_saved_embedding(model: nn.Module, tensors: dict[str, torch.Tensor]):
    """PEFT's `modules_to_save` trains a copy of the module: for an input embedding tied to the output layer,
    the output layer keeps W0 in PEFT. Loading the saved embedding into the shared parameter would change the
    output layer too (logits off by 1.3-2.7 on tiny GPT-2 and Llama); give the embedding its own parameter."""
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    weight = getattr(embedding, "weight", None)
    if weight is None or output is None or getattr(output, "weight", None) is not weight:
        return
    name = next(n for n, p in model.named_parameters() if p is weight)
    if name in tensors:
        embedding.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        model.config.tie_word_embeddings = False  # nothing may tie them again


def _rescale(t: torch.Tensor, factor: float) -> torch.Tensor:
    return t.clone() if factor == 1.0 else t * factor


def _peft_scale(cfg: dict, module: str, rank: int) -> float:
    alpha = cfg.get("lora_alpha", 8)
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():  # PEFT's get_pattern_key rule
        try:
            matched = re.match(rf"(.*\.)?({pattern})$", module)
        except re.error as err:
            why = f"alpha_pattern key {pattern!r} is not a regular expression ({err})"
            raise LoRAError(f"adapter_config.json: {why}") from None
        if matched:
            alpha = value
            break
    return alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _count(v, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _table(v, value_ok) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and value_ok(x) for k, x in v.items())


def _names(v) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _indices(v) -> bool:
    return _count(v, 0) or (isinstance(v, list) and all(_count(x, 0) for x in v))


# What each field read from adapter_config.json must hold (null is "unset" everywhere, as PEFT writes it).
_TYPES = {
    "a string": (lambda v: isinstance(v, str),
                 ("peft_type", "task_type", "base_model_name_or_path", "revision", "peft_version", "bias")),
    "a positive integer": (lambda v: _count(v, 1), ("r",)),
    "a finite number": (_number, ("lora_alpha", "lora_dropout")),
    "true or false": (lambda v: isinstance(v, bool),
                      ("fan_in_fan_out", "use_rslora", "inference_mode", "ensure_weight_tying")),
    "a name or a list of names": (_names, ("target_modules", "modules_to_save", "exclude_modules", "layers_pattern")),
    "an object of module patterns to positive integers": (lambda v: _table(v, lambda x: _count(x, 1)),
                                                          ("rank_pattern",)),
    "an object of module patterns to finite numbers": (lambda v: _table(v, _number), ("alpha_pattern",)),
    "a block index or a list of them": (_indices, ("layers_to_transform",)),
    "true, false or a method's name": (lambda v: isinstance(v, bool | str), ("init_lora_weights",)),
    "an object": (lambda v: isinstance(v, dict), ("auto_mapping",)),
}  # fmt: skip


def _check_types(cfg, source: Path):
    """Every field this library reads has PEFT's JSON type, so a hand-edited config fails in one line."""
    if not isinstance(cfg, dict):
        raise LoRAError(f"{source} holds a JSON {type(cfg).__name__}, not an object of PEFT settings; "
                        "it is not a PEFT adapter_config.json")  # fmt: skip
    for kind, (ok, fields) in _TYPES.items():
        for key in fields:
            value = cfg.get(key)
            if value is not None and not ok(value):
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                raise LoRAError(f"{source}: {key} must be {kind}, got {shown}")


def _check_supported(cfg: dict, source: Path):
    if cfg.get("peft_type") != "LORA":
        raise LoRAError(f"{source} is a {cfg.get('peft_type')!r} adapter; only PEFT LoRA adapters can be loaded")
    for key, value in cfg.items():
        if key in _READ or value in (None, False, {}, [], "") or _HARMLESS.get(key) == value:
            continue
        name = key if key.isidentifier() else repr(key)  # a key with a newline must not break the one line
        raise LoRAError(f"{source} sets {name}={value!r}, which this library does not implement; remove it or use PEFT")
    if cfg.get("init_lora_weights", True) not in (True, False, "gaussian"):
        raise LoRAError(
            f"{source} uses init_lora_weights={cfg['init_lora_weights']!r}, which changes the base weights; "
            "only adapters over an unmodified base can be loaded"
        )
    if cfg.get("bias", "none") not in ("none", "all", "lora_only"):
        raise LoRAError(f"{source} has bias={cfg.get('bias')!r}; expected none, all or lora_only")


def _infer_config(model: nn.Module, cfg: dict, tensors: dict, source: Path) -> LoRAConfig:
    """A LoRAConfig equivalent to a PEFT adapter written elsewhere (one rank and alpha per weight type)."""
    family = family_of(model)
    type_of = family.find(model, family.weight_types())
    ranks, alphas, layers = {}, {}, set()
    block = re.compile(rf"(?:^|.*\.){re.escape(family.blocks)}\.(\d+)\.")
    for key, A in tensors.items():
        if not key.endswith(("lora_A.weight", "lora_embedding_A")):
            continue
        module = key.removeprefix(PREFIX).rsplit(".lora_", 1)[0]
        parts = type_of.get(module)
        if parts is None:
            raise LoRAError(f"{source} adapts {module}, which is not one of the {family.name} weight types")
        r = A.shape[0]
        alpha = _peft_scale(cfg, module, r) * (math.sqrt(r) if cfg.get("use_rslora") else r)
        for t in parts:  # a fused matrix (GPT-2's c_attn): each of its slices, with A shared (see load_peft)
            if ranks.setdefault(t, r) != r or not math.isclose(alphas.setdefault(t, alpha), alpha):
                raise LoRAError(f"{source} uses different ranks or alphas for {t!r} in different layers; not supported")
        if m := block.match(module):
            layers.add(int(m.group(1)))
    if not ranks:
        raise LoRAError(f"{source} holds no LoRA weights")
    n_blocks = family.num_blocks(dict(model.named_modules()))
    config = LoRAConfig(
        r=ranks, alpha=alphas, dropout=float(cfg.get("lora_dropout") or 0.0), bias=cfg.get("bias", "none"),
        layers=None if len(layers) in (0, n_blocks) else tuple(layers), rslora=bool(cfg.get("use_rslora")),
        train_head=bool(cfg.get("modules_to_save")),
    )  # fmt: skip
    expected = set(family.find(model, config.targets, config.layers))
    found = {k.removeprefix(PREFIX).rsplit(".lora_", 1)[0] for k in tensors if ".lora_" in k}
    if expected != found:
        raise LoRAError(f"{source} adapts an irregular set of modules ({len(found)}) that no per-type config matches")
    return config


def _task_type(model: nn.Module) -> str | None:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return "SEQ_CLS"
    if name.endswith(("ForCausalLM", "LMHeadModel")):
        return "CAUSAL_LM"
    return None
