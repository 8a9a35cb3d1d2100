"""What every method shares: freezing, the task head, and the error for bad method input."""

from __future__ import annotations

from torch import nn

from lora.families import family_of


class MethodError(ValueError):
    """A method that does not exist or does not apply to the model; the message says which do."""


def freeze(model: nn.Module):
    for p in model.parameters():
        p.requires_grad_(False)


def train_head(model: nn.Module):
    """The task head (classifier / score) trains with every method, and is reported apart."""
    heads = family_of(model).heads
    for name, module in model.named_children():
        if name in heads:
            module.requires_grad_(True)
