"""DeBERTa's relative positions through W_q as microsoft/LoRA projects them: part of an adapter's state.

With ``share_att_key``, DeBERTa-v2 projects its relative-position embeddings with W_q and W_k too.
microsoft/LoRA's model does the query's projection with W0 alone (``nn.Linear.forward(self.query_proj,
rel_embeddings)``, its loralib layers never merged), transformers' (and PEFT's, and ours by default) with
W0 + ΔW: 28% of the LoRA effect on a tiny model of that shape.

The handling belongs to the adapter, not to the model: it holds no layer of its own (each call projects the
positions with what ``query_proj`` is at that moment: a LoRA layer's W0, or a bank's choice per adapter), it
goes away with the adapter (`lora.unload`, ``bank.remove``), and while it is on, merging is refused, since a
merged W0 would carry ΔW into the positions.
"""

from __future__ import annotations

from torch import nn

from .config import LoRAError
from .layer import LoRALayer

MICROSOFT_DEBERTA_ATTR = "lora_microsoft_deberta_positions"  # on the model: lora.save records it
_METHOD = "disentangled_attention_bias"  # DeBERTa-v2's method that projects the relative positions
MERGE_REFUSED = (
    "this DeBERTa model projects its relative positions with W0 alone (microsoft_deberta_positions); "
    "merging would fold ΔW into them: evaluate it unmerged"
)


def microsoft_deberta_positions(model: nn.Module) -> nn.Module:
    """Make every attention block of a LoRA DeBERTa-v2 model whose W_q is adapted project its relative
    positions with W0 alone, as microsoft's code does; merging is then refused. Calling it twice is a no-op."""
    for module in _shared_key_attention(model):
        layer = module.query_proj
        if not isinstance(layer, LoRALayer):
            continue
        if layer.merged:
            raise LoRAError("microsoft's DeBERTa position projection needs W0 apart: unmerge the model first")
        layer.merge_refused = MERGE_REFUSED
        _patch(module)
        setattr(model, MICROSOFT_DEBERTA_ATTR, True)
    return model


def w0_position_sites(model: nn.Module) -> frozenset[str]:
    """Names of the ``query_proj`` modules whose relative positions are projected with W0 alone."""
    return frozenset(
        f"{name}.query_proj" if name else "query_proj"
        for name, m in model.named_modules()
        if isinstance(vars(m).get(_METHOD), _W0Positions)
    )


def project_positions_with_w0(model: nn.Module, sites: frozenset[str] | set[str]):
    """Patch the attention blocks owning these ``query_proj`` sites (an adapter bank chooses W0 or not per
    adapter through its layer's ``for_positions``)."""
    for site in sites:
        _patch(model.get_submodule(site.rpartition(".")[0]))


def remove_microsoft_positions(model: nn.Module) -> nn.Module:
    """Take the handling off every attention block: transformers' own method again, merging allowed."""
    for module in model.modules():
        patch = vars(module).get(_METHOD)
        if isinstance(patch, _W0Positions):
            delattr(module, _METHOD)
            if patch.original is not None:  # someone else's patch, made before ours
                setattr(module, _METHOD, patch.original)
        if isinstance(module, LoRALayer) and getattr(module, "merge_refused", None) == MERGE_REFUSED:
            del module.merge_refused
    if hasattr(model, MICROSOFT_DEBERTA_ATTR):
        delattr(model, MICROSOFT_DEBERTA_ATTR)
    return model


def _shared_key_attention(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(m, "share_att_key", False) and hasattr(m, "query_proj")]


def _patch(module: nn.Module):
    if not isinstance(vars(module).get(_METHOD), _W0Positions):
        setattr(module, _METHOD, _W0Positions(module))


class _W0Positions:
    """``disentangled_attention_bias`` of one attention block, with ``query_proj`` seen through its W0 only.

    A module-level class, not a closure: a deep copy of the model gets a patch bound to the copy, and a pickled
    model can be read back.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.original = vars(module).get(_METHOD)  # an instance's own method (None: the class's)

    def __call__(self, *args, **kwargs):
        module = self.module
        layer = module.query_proj
        module.query_proj = _for_positions(layer)
        try:
            if self.original is not None:
                return self.original(*args, **kwargs)
            return type(module).disentangled_attention_bias(module, *args, **kwargs)
        finally:
            module.query_proj = layer


def _for_positions(layer: nn.Module) -> nn.Module:
    if isinstance(layer, LoRALayer):
        if layer.merged:
            raise LoRAError(MERGE_REFUSED)
        return layer.base
    view = getattr(layer, "for_positions", None)  # an adapter bank's layer: W0 or W0 + ΔW per adapter
    return view() if view is not None else layer
