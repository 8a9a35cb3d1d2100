"""Whole-model operations: apply, merge, unmerge, unload, count."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from .config import WEIGHT_TYPES, LoRAConfig, LoRAError
from .families import family_of, head_module, train_heads
from .layer import LoRALayer, Slot, in_features
from .positions import remove_microsoft_positions

CONFIG_ATTR = "lora_config"  # where `apply` records the config on the model, for `save`
SWAPPED_IN_ATTR = "lora_swapped_in"  # the adapter a `lora.HotSwap` has merged into the weights, if any


def apply(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Inject LoRA into a transformers model in place and freeze everything else; returns the model.

    Trainable afterwards: the LoRA matrices, the biases chosen by ``config.bias``, and the task head
    (``classifier`` / ``score``, and BERT's pooler) when ``config.train_head`` and the model has one.

    >>> from transformers import BertConfig, BertModel
    >>> model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    ...                              intermediate_size=32, vocab_size=50))
    >>> model = apply(model, LoRAConfig(r=4, targets=("q", "v")))
    >>> count(model).trainable == 2 * 4 * 16 * 4  # 2 * L_hat * d * r with L_hat = 4 matrices
    True
    """
    if any(True for _ in lora_layers(model)):
        raise LoRAError("the model already has LoRA layers; call lora.unload(model) first to start over")
    if getattr(model, SWAPPED_IN_ATTR, None) is not None:
        raise LoRAError(
            f"adapter {getattr(model, SWAPPED_IN_ATTR)!r} is merged into this model's weights by lora.HotSwap; "
            "call swap.activate(None) first, so that a new adapter starts from W0"
        )
    family = family_of(model)
    sites = family.find(model, config.targets, config.layers)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, parts in sites.items():
        base = model.get_submodule(name)
        slots = {}
        for t, (offset, width) in parts.items():
            r = config.rank(t)
            limit = min(width, in_features(base))
            if r > limit:
                raise LoRAError(f"rank {r} for {t!r} exceeds the size of {name} ({width} x {limit}); use r <= {limit}")
            slots[t] = Slot(offset, width, r, config.scale(t))
        _replace(model, name, LoRALayer(base, slots, config.dropout, config.init))
    _mark_trainable(model, config, family.heads)
    setattr(model, CONFIG_ATTR, config)
    return model


def _replace(model: nn.Module, name: str, module: nn.Module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _mark_trainable(model: nn.Module, config: LoRAConfig, heads: tuple[str, ...]):
    for _, layer in lora_layers(model):
        for p in (*layer.lora_A.values(), *layer.lora_B.values()):
            p.requires_grad_(True)
        if config.bias == "lora_only" and getattr(layer.base, "bias", None) is not None:
            layer.base.bias.requires_grad_(True)
    if config.bias == "all":
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
    if config.train_head:
        train_heads(model, heads)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALayer]]:
    """(name, layer) for every LoRA layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALayer):
            yield name, module


def merge(model: nn.Module) -> nn.Module:
    """W = W0 + scale * B A in place, for every LoRA layer; merging twice is a no-op.

    An adapted embedding tied to the output layer (GPT-2, SmolLM2) is untied first: unmerged, Delta W
    reaches only the input side, so the output layer keeps its own copy of W0 to stay equal. A layer that refuses
    merging (DeBERTa's positions projected with W0 alone) is found before any weight changes: a refused merge
    leaves the model as it was.
    """
    layers = [layer for _, layer in lora_layers(model)]
    refused = next((layer.merge_refused for layer in layers if getattr(layer, "merge_refused", None)), None)
    if refused:
        raise LoRAError(refused)
    for layer in layers:
        if layer.kind == "embedding" and not layer.merged:
            _untie(model, layer.base.weight)
        layer.merge()
    return model


def _untie(model: nn.Module, weight: nn.Parameter):
    for module in model.modules():
        if getattr(module, "weight", None) is weight and not isinstance(module, nn.Embedding):
            module.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
            if hasattr(model, "config"):
                model.config.tie_word_embeddings = False  # so save_pretrained/from_pretrained keep them apart


def unmerge(model: nn.Module) -> nn.Module:
    """Undo `merge`; unmerging an unmerged model is a no-op."""
    for _, layer in lora_layers(model):
        layer.unmerge()
    return model


def unload(model: nn.Module, merged: bool = True) -> nn.Module:
    """Put the plain base layers back, with Delta W merged in (or not): a plain transformers model again.

    What the adapter changed beside its layers goes too: DeBERTa's position handling (`lora.positions`).
    """
    merge(model) if merged else unmerge(model)
    remove_microsoft_positions(model)
    for name, layer in list(lora_layers(model)):
        _replace(model, name, layer.base)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    return model


@dataclass
class ParamCount:
    """Trainable and total parameters, with the trainable ones broken down by kind."""

    trainable: int
    total: int
    by_type: dict[str, int] = field(default_factory=dict)  # weight type, "bias", "head", "other"

    @property
    def lora(self) -> int:
        """The LoRA matrices alone: the paper's "# Trainable Parameters" (task heads excluded)."""
        return sum(n for t, n in self.by_type.items() if t in WEIGHT_TYPES)

    def __str__(self) -> str:
        rows = [(t, n) for t, n in self.by_type.items()] + [("trainable", self.trainable), ("total", self.total)]
        share = f"{100 * self.trainable / self.total:.4f}% of {self.total:,}" if self.total else "n/a"
        width = max(len(t) for t, _ in rows)
        body = "\n".join(f"{t:<{width}}  {n:>14,}" for t, n in rows)
        return f"{body}\ntrainable share: {share}"


def count(model: nn.Module) -> ParamCount:
    """Count trainable and total parameters (a tied parameter once), by weight type.

    >>> from torch import nn
    >>> count(nn.Linear(3, 2))
    ParamCount(trainable=8, total=8, by_type={'bias': 2, 'other': 6})
    """
    kinds = {}
    for layer_name, layer in lora_layers(model):
        for t in layer.slots:
            kinds[f"{layer_name}.lora_A.{t}"] = t
            kinds[f"{layer_name}.lora_B.{t}"] = t
    heads = family_heads(model)
    by_type: dict[str, int] = {}
    trainable = total = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        trainable += p.numel()
        kind = kinds.get(name) or ("head" if head_module(name, heads) else "bias" if name.endswith("bias") else "other")
        by_type[kind] = by_type.get(kind, 0) + p.numel()
    order = {t: i for i, t in enumerate((*WEIGHT_TYPES, "bias", "head", "other"))}
    return ParamCount(trainable, total, dict(sorted(by_type.items(), key=lambda kv: order[kv[0]])))


def family_heads(model: nn.Module) -> tuple[str, ...]:
    try:
        return family_of(model).heads
    except LoRAError:
        return ()


def max_positions(config) -> int:
    """The longest input a model takes, from its transformers config (RoBERTa reserves two positions for its
    padding offset; a model without a limit gets a large number).

    >>> from transformers import GPT2Config, RobertaConfig
    >>> max_positions(GPT2Config(n_positions=64)), max_positions(RobertaConfig(max_position_embeddings=514))
    (64, 512)
    """
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9
    return n - 2 if getattr(config, "model_type", "") == "roberta" else n
