"""Adapter layers (Houlsby et al., 2019 and its variants), the paper's main baselines.

An adapter is a bottleneck with a skip connection, h + up(act(down(h))), inserted after a block's
attention output and/or MLP output, before the residual sum. `up` starts at zero, so a freshly adapted
model computes exactly what the base model computes. Variants, as the paper's Section 5.1:

    adapter_h  Houlsby: after attention and after the MLP; the blocks' LayerNorms train too (optional)
    adapter_l  Lin et al.: after the MLP only, with a LayerNorm of its own
    adapter_p  Pfeiffer et al.: after the MLP only
    adapter_d  AdapterDrop (Rücklé et al.): adapter_h with the adapters of the lowest blocks dropped

Trainable parameters: L_adpt (2 d r + r + d) + 2 L_ln d (the paper's formula).
"""

from __future__ import annotations

from torch import nn

from lora.families import family_of

from .common import freeze, integer_options, train_head

PLACES = {"adapter_h": ("o", "mlp_out"), "adapter_l": ("mlp_out",), "adapter_p": ("mlp_out",),
          "adapter_d": ("o", "mlp_out")}  # fmt: skip


class Adapter(nn.Module):
    """h + up(act(down(norm(h)))): a bottleneck of width r around the identity."""

    def __init__(self, d: int, r: int, layernorm: bool = False, like: nn.Parameter | None = None):
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype} if like is not None else {}
        self.norm = nn.LayerNorm(d, **kw) if layernorm else nn.Identity()
        self.down = nn.Linear(d, r, **kw)
        self.act = nn.GELU()
        self.up = nn.Linear(r, d, **kw)
        nn.init.zeros_(self.up.weight)  # the identity at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        return h + self.up(self.act(self.down(self.norm(h))))


class Adapted(nn.Module):
    """A module followed by an adapter on its output."""

    def __init__(self, base: nn.Module, adapter: Adapter):
        super().__init__()
        self.base, self.adapter = base, adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def add_adapters(model: nn.Module, cfg: dict) -> nn.Module:
    """Insert adapters of the variant cfg["name"]; freeze the rest (the task head trains)."""
    name = cfg["name"]
    family = family_of(model)
    blocks = family.block_names(dict(model.named_modules()))
    options = integer_options(name, cfg, len(blocks))
    r, drop = options["r"], options.get("drop_lower", 0)
    freeze(model)
    layers = tuple(range(drop, len(blocks)))
    d = model.config.hidden_size
    for site in family.find(model, PLACES[name], layers):
        base = model.get_submodule(site)
        adapted = Adapted(base, Adapter(d, r, layernorm=name == "adapter_l", like=base.weight))
        parent, _, child = site.rpartition(".")
        setattr(model.get_submodule(parent), child, adapted)
    if name == "adapter_h" and cfg.get("train_layernorm", False):
        for block in blocks[drop:]:
            for norm in family.norms:
                model.get_submodule(f"{block}.{norm}").requires_grad_(True)
    for module in model.modules():
        if isinstance(module, Adapter):
            module.requires_grad_(True)
    train_head(model)
    return model


def count_adapters(model: nn.Module) -> tuple[int, int]:
    """(L_adpt, L_ln): adapter layers and trainable normalisation layers, for the paper's formula."""
    adapters = sum(isinstance(m, Adapter) for m in model.modules())
    norms = sum(
        "norm" in type(m).__name__.lower() and m.weight.requires_grad for m in model.modules() if hasattr(m, "weight")
    )
    return adapters, norms
