"""Full fine-tuning: every parameter trains (the paper's FT rows)."""

from torch import nn


def full_ft(model: nn.Module, cfg: dict) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model
