"""Hot swap on a merged model: one adapter's Delta W in the weights at a time, switched in place.

A merged model costs exactly the base model per token (the paper's "no inference latency"), and
switching tasks means W <- W - Delta W_old + Delta W_new. In floating point that is not exact: each
swap rounds W once more, so after many swaps W drifts from W0 + Delta W_new, most in bf16 (8 bits
of mantissa). `HotSwap` therefore keeps W0 of the adapted slices (only those: for q, v of
SmolLM2-135M 13M of its 135M weights) and sets W = W0 + Delta W_new: the same bits after any number
of swaps as after one merge. ``exact=False`` gives the naive in-place update, kept to measure the
drift it causes (benchmarks/hot_swap.py).

>>> import torch, lora, tempfile
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> def tiny():
...     _ = torch.manual_seed(0)
...     return LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
...                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=40))
>>> files = {}
>>> for name in ("a", "b"):
...     m = lora.apply(tiny(), lora.LoRAConfig(r=2))
...     for p in m.parameters():
...         if p.requires_grad: _ = torch.nn.init.normal_(p)
...     files[name] = lora.save(m, tempfile.mkdtemp())
>>> model = tiny()
>>> swap = lora.HotSwap(model, files)
>>> for _ in range(50):
...     swap.activate("a"); swap.activate("b")
>>> merged_once = lora.unload(lora.load(tiny(), files["b"]))
>>> all(torch.equal(p, q) for p, q in zip(model.parameters(), merged_once.parameters()))
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from .config import LoRAError
from .layer import weight_slice
from .model import SWAPPED_IN_ATTR, _untie
from .multi import Adapter, check_name, read


class HotSwap:
    """Adapters ``{name: file or folder}`` for one plain model, of which `activate` merges one."""

    def __init__(self, model: nn.Module, adapters: Mapping[str, str | os.PathLike], exact: bool = True):
        for name in adapters:
            check_name(name)
        self.model = model
        self.exact = exact
        self.adapters = {name: read(model, name, path, merged=True) for name, path in adapters.items()}
        for name, adapter in self.adapters.items():
            if adapter.w0_positions:  # as lora.merge refuses: merged, W0 + ΔW would reach the positions
                raise LoRAError(
                    f"adapter {name!r} projects DeBERTa's relative positions with W0 alone (microsoft's handling), "
                    "which a merged model cannot do; serve it in a bank (lora.multi) or unmerged (lora.load)"
                )
        self.active: str | None = None
        keys = {(site, t) for a in self.adapters.values() for site, t in a.factors}
        self._views = {}
        for site, t in sorted(keys):
            f = next(a.factors[site, t] for a in self.adapters.values() if (site, t) in a.factors)
            if isinstance(model.get_submodule(site), nn.Embedding):  # as lora.merge: the tied output keeps W0
                _untie(model, model.get_submodule(site).weight)
            self._views[site, t] = weight_slice(model.get_submodule(site), f.offset, f.width)
        head_names = {n for a in self.adapters.values() for n in a.head}
        params = dict(model.named_parameters())  # after untying: the output layer may have its own weight now
        self._heads = {n: params[n] for n in head_names}
        self._base_heads = {n: p.detach().clone() for n, p in self._heads.items()}
        # W0 of the adapted slices (a copy, not a view), from which every exact swap starts.
        self._anchor = {key: view.detach().clone() for key, view in self._views.items()} if exact else {}

    @torch.no_grad()
    def activate(self, name: str | None):
        """Merge adapter `name` (None: the base model) in place of the active one."""
        if name is not None and name not in self.adapters:
            raise LoRAError(f"unknown adapter {name!r}; loaded: {', '.join(self.adapters)}")
        if name == self.active:
            return
        old, new = self._adapter(self.active), self._adapter(name)
        for key, view in self._views.items():
            # copy=True: .float() of a float32 tensor is the tensor itself, and the anchor must stay W0
            if self.exact:
                w = self._anchor[key].to(torch.float32, copy=True)
            else:
                w = view.to(torch.float32, copy=True)
                if old is not None and key in old.factors:
                    w -= old.factors[key].delta()
            if new is not None and key in new.factors:
                w += new.factors[key].delta()
            view.copy_(w.to(view.dtype))
        for n, p in self._heads.items():
            p.copy_(new.head[n] if new is not None and n in new.head else self._base_heads[n])
        self.active = name
        setattr(self.model, SWAPPED_IN_ATTR, name)  # lora.apply refuses to stack an adapter on a merged one

    def _adapter(self, name: str | None) -> Adapter | None:
        return None if name is None else self.adapters[name]

    def __repr__(self) -> str:
        mode = "exact" if self.exact else "in place"
        return f"HotSwap({len(self.adapters)} adapters, active={self.active!r}, {mode})"
