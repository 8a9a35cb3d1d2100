"""Fine-tuning baselines: everything (FT), the last two blocks (FT^Top2), the biases (BitFit), or nothing but the
task head (the control every method's row is read against)."""

from __future__ import annotations

from torch import nn

from lora.families import family_of

from .common import MethodError, freeze, integer_options, train_head


def full_ft(model: nn.Module, cfg: dict) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def ft_top2(model: nn.Module, cfg: dict) -> nn.Module:
    """Only the last two transformer blocks train (the paper's FT^Top2), plus the task head."""
    blocks = family_of(model).block_names(dict(model.named_modules()))
    top = integer_options("ft_top2", cfg, len(blocks))["blocks"]  # 1..L: blocks[-0:] would be every block
    freeze(model)
    for name in blocks[len(blocks) - top :]:
        model.get_submodule(name).requires_grad_(True)
    train_head(model)
    return model


def head_only(model: nn.Module, cfg: dict) -> nn.Module:
    """Only the task head trains (BERT: pooler and classifier), the encoder frozen: what each method adds is its
    score above this one. Not in the paper, whose heads train with every method."""
    freeze(model)
    train_head(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise MethodError(f"head_only: this {model.config.model_type} model has no task head to train")
    return model


def bitfit(model: nn.Module, cfg: dict) -> nn.Module:
    """Only the bias vectors train (Zaken et al., 2021), plus the task head."""
    freeze(model)
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    if not biases:
        raise MethodError(f"bitfit: this {model.config.model_type} model has no bias vectors to train")
    for p in biases:
        p.requires_grad_(True)
    train_head(model)
    return model
