"""The optimizers a run can use (`trainer.optimizer`):

    adamw           torch's AdamW: eps added to the bias-corrected sqrt(v), weight decay before the update
    adamw_released  microsoft/LoRA's `examples/NLG/src/optimizer.py` AdamW, which trained the paper's GPT-2 runs:
                    eps (default 1e-6) added to the *uncorrected* sqrt(v), the bias correction folded into the
                    step size, weight decay applied after the update, to the updated weights, and to every
                    parameter: gpt2_ft.py builds its groups without --no_decay_bias (its README's commands do not
                    pass it), so biases and LayerNorm weights decay too

The two differ most where gradients are small: one step's update of an entry with |g| near eps differs by up to
75% (measured on GPT-2 LoRA gradients; tests/experiments/test_released_training.py checks ours against the
released optimizer's updates).
"""

from __future__ import annotations

import math

import torch

OPTIMIZERS = ("adamw", "adamw_released")
DEFAULT_EPS = {"adamw": 1e-8, "adamw_released": 1e-6}


class ReleasedAdamW(torch.optim.Optimizer):
    """AdamW as microsoft/LoRA's optimizer.py computes it (with `correct_bias`, as its README trains).

    Written here because no library has these semantics any more (transformers removed its AdamW, which had
    them), and torch's AdamW cannot express them: its eps is added after the bias correction.

    >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> p.grad = torch.tensor([1e-6, 0.5])
    >>> opt = ReleasedAdamW([p], lr=0.1, eps=1e-6, weight_decay=0.0)
    >>> opt.step()
    >>> [round(v, 4) for v in p.tolist()]  # the tiny gradient moves 0.003, not torch's 0.1
    [0.9969, -2.1]
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = v.sqrt().add_(group["eps"])
                step = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(m, denom, value=-step)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def param_groups(model: torch.nn.Module, kind: str, weight_decay: float) -> list[dict]:
    """The trainable parameters in groups with their weight decay: under `adamw` biases and normalisation weights
    are exempt (the usual transformers recipe); under `adamw_released` all decay, as in gpt2_ft.py."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            exempt = kind != "adamw_released" and (p.ndim < 2 or "norm" in name.lower())
            (rest if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # DeepSpeed drops empty groups, and the schedule must match


def build(kind: str, param_groups: list[dict], lr: float, eps: float | None = None) -> torch.optim.Optimizer:
    """The optimizer `trainer.optimizer` names; `eps` None takes that optimizer's own default."""
    eps = DEFAULT_EPS[kind] if eps is None else eps
    if kind == "adamw_released":
        return ReleasedAdamW(param_groups, lr=lr, eps=eps)
    return torch.optim.AdamW(param_groups, lr=lr, eps=eps)
