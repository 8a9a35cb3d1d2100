"""What every method shares: freezing, the task head, the error for bad method input, and the one table of the
methods' integer options with their ranges (checked before anything loads, and again on the real model)."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from lora.families import family_of, train_heads


class MethodError(ValueError):
    """A method that does not exist or does not apply to the model; the message says which do."""


def freeze(model: nn.Module):
    for p in model.parameters():
        p.requires_grad_(False)


def train_head(model: nn.Module):
    """The task head (classifier / score, BERT's pooler) trains with every method, and is reported apart."""
    train_heads(model, family_of(model).heads)


class Whole(NamedTuple):
    """An integer option: its default, its lowest value, and its highest as an offset from the model's number of
    blocks (None: unbounded)."""

    default: int
    low: int
    top: int | None = None
    meaning: str = ""


# Every integer option of every method in baselines/ (LoRA's own are lora.LoRAConfig's). A fraction, a bool, text
# or a value out of range is refused: `blocks[-0:]` once trained every block of FT^Top2 for blocks=0.
_R = Whole(16, 1, meaning="the bottleneck width")
_PREFIX = {"l_p": Whole(8, 0, meaning="prefix tokens"), "l_i": Whole(8, 0, meaning="infix tokens")}
INTEGER_OPTIONS: dict[str, dict[str, Whole]] = {
    "ft_top2": {"blocks": Whole(2, 1, 0, "the top blocks that train")},
    "adapter_h": {"r": _R},
    "adapter_l": {"r": _R},
    "adapter_p": {"r": _R},
    "adapter_d": {"r": _R, "drop_lower": Whole(0, 0, -1, "the lowest blocks without adapters")},
    "prefix_embed": _PREFIX,
    "prefix_layer": _PREFIX,
    "lora_prefix_embed": _PREFIX,
    "lora_prefix_layer": _PREFIX,
}


def integer_options(name: str, cfg: dict, blocks: int | None = None) -> dict[str, int]:
    """The integer options of method `name` in `cfg` (defaults filled in), each checked for type and range;
    `blocks` (the model's number of transformer blocks, None when not known yet) bounds those that count blocks."""
    values = {}
    for key, option in INTEGER_OPTIONS.get(name, {}).items():
        value = cfg.get(key, option.default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MethodError(f"{name}: method.{key} must be a whole number ({option.meaning}), got {value!r}")
        top = None if option.top is None or blocks is None else blocks + option.top
        if key == "drop_lower" and top is not None and value > top:
            raise MethodError(f"{name}: drop_lower={value} must leave at least one of the {blocks} blocks")
        if value < option.low or (top is not None and value > top):
            upto = f" to {top} (the model has {blocks} blocks)" if top is not None else " or more"
            raise MethodError(f"{name}: method.{key}={value} must be {option.low}{upto}: {option.meaning}")
        values[key] = value
    return values
