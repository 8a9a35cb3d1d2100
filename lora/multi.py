"""Many adapters on one base model: every row of a batch names its adapter, or none.

The paper's Section 4.2 names the limit of merged LoRA: inputs for different tasks cannot share a
batch. Serving systems since (S-LoRA, Punica, vLLM) keep the base weights once and gather each
row's low-rank factors. This is that layout in plain PyTorch:

- each adapted layer keeps its base layer and, per weight type, the adapters' factors stacked as
  A of shape (N + 1, R, in) and B of shape (N + 1, out, R), the scale folded into B, lower ranks
  zero-padded to the largest R, and index 0 all zeros (a row with no adapter);
- a forward pass is one base matmul for the whole batch plus one gathered ``bmm`` pair per weight
  type: no Python loop over adapters, so its cost does not grow with N;
- task heads (a classifier per adapter) run once per distinct adapter on the pooled rows: a head is
  one small matmul on one vector per row, not where a batch's time goes.

`AdapterBankLayer` is a second layer class beside `LoRALayer` on purpose: LoRALayer trains one
adapter as parameters; a bank holds N frozen adapters as buffers and routes rows, and folding both
into one class would put a branch on every line of either.

>>> import torch, lora, tempfile
>>> from transformers import BertConfig, BertForSequenceClassification
>>> def tiny():
...     torch.manual_seed(0)
...     return BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=2,
...         num_attention_heads=2, intermediate_size=32, vocab_size=50)).eval()
>>> files = {}
>>> for name, seed in (("a", 1), ("b", 2)):
...     m = lora.apply(tiny(), lora.LoRAConfig(r=2, targets=("q", "v")))
...     _ = torch.manual_seed(seed)
...     for p in m.parameters():
...         if p.requires_grad: _ = torch.nn.init.normal_(p)
...     files[name] = lora.save(m, tempfile.mkdtemp())
>>> model = tiny()
>>> bank = lora.multi.load(model, files)
>>> x = torch.randint(0, 50, (3, 5))
>>> with bank.rows(["a", None, "b"]):
...     mixed = model(x).logits
>>> alone = lora.load(tiny(), files["b"])(x[2:]).logits
>>> torch.allclose(mixed[2:], alone, atol=1e-5)
True
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from .config import LoRAError
from .families import head_module
from .io import load as load_adapter
from .layer import _kind
from .model import _replace, family_heads, lora_layers, unload
from .positions import project_positions_with_w0, remove_microsoft_positions, w0_position_sites

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass
class Factors:
    """One adapter's update of one weight type at one site: Delta W = scale * B A."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (width, r)
    scale: float
    offset: int
    width: int

    def delta(self) -> torch.Tensor:
        """Delta W in float32, computed as `LoRALayer.delta_weight` does (so merges agree bit for bit)."""
        return self.scale * (self.B.float() @ self.A.float())


@dataclass
class Adapter:
    """An adapter read from a file: its factors per (site, weight type) and its task head, if any."""

    name: str
    factors: dict[tuple[str, str], Factors]
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter name -> tensor (heads; HotSwap: biases)
    # DeBERTa's W_q sites whose relative positions this adapter projects with W0 alone (microsoft's handling)
    w0_positions: frozenset[str] = frozenset()


def read(model: nn.Module, name: str, path: str | os.PathLike, merged: bool = False) -> Adapter:
    """Read an adapter (ours or PEFT's) with every check `lora.load` makes, leaving `model` as it was.

    A bank gathers factors of Linear and Conv1D layers and shares the base's biases, so an adapted embedding or
    trained biases are refused, unless `merged` (for `HotSwap`): then trained biases are replaced whole, as heads.

    The adapter is loaded into the model itself, its factors copied out, and the model put back
    (LoRA layers removed, the head's weights restored): no second copy of the base model is made.
    The model is left frozen (no parameter requires grad): banks and swaps are for inference.
    """
    if any(True for _ in lora_layers(model)):
        raise LoRAError("the model already has LoRA layers; give a plain base model (lora.unload it first)")
    heads = family_heads(model)
    # What an adapter may overwrite besides its factors: the head and (bias training) the biases.
    before = {n: p.detach().clone() for n, p in model.named_parameters() if head_module(n, heads) or n.endswith("bias")}
    try:
        load_adapter(model, path)  # inside: a file that fails half-way must not leave LoRA layers behind
        factors = {}
        for site, layer in lora_layers(model):
            if layer.kind == "embedding" and not merged:
                raise LoRAError(f"adapter {name!r} adapts the embedding; serve it merged, not in a bank")
            for t, s in layer.slots.items():
                A, B = layer.lora_A[t].detach().clone(), layer.lora_B[t].detach().clone()
                factors[site, t] = Factors(A, B, s.scale, s.offset, s.width)
        lora_names = {f"{site}.lora_{m}.{t}" for site, t in factors for m in "AB"}
        trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        other = [n for n in trained if n not in lora_names and not head_module(n, heads)]
        if other and not merged:
            raise LoRAError(
                f"adapter {name!r} also trains {other[0]} (biases?); a bank shares the base's weights, "
                "so serve this one merged"
            )
        head = {_plain_name(n): t for n, t in trained.items() if head_module(n, heads) or n in other}
        w0_positions = w0_position_sites(model)
    finally:
        unload(model, merged=False)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for n, t in before.items():
                params[n].copy_(t)
    return Adapter(name, factors, head, w0_positions)


def _plain_name(name: str) -> str:
    """A parameter's name once LoRA layers are unloaded (a LoRA layer's ``base.bias`` is the layer's ``bias``)."""
    return name[: -len(".base.bias")] + ".bias" if name.endswith(".base.bias") else name


class _Rows:
    """The adapter index of each row of the current batch, shared by every layer of one bank."""

    def __init__(self):
        self.ids: torch.Tensor | None = None

    def for_batch(self, batch: int, slot_of: torch.Tensor) -> torch.Tensor:
        """Each row's slot in a layer's stack (`slot_of` maps bank index -> slot, 0 for none)."""
        if self.ids is None:
            raise LoRAError("this model serves several adapters: call it inside `with bank.rows(names):`")
        ids = slot_of[self.ids]
        if batch == 1 < len(ids):
            # DeBERTa projects its relative-position embeddings with W_q and W_k once for all rows.
            if (ids != ids[0]).any():
                raise LoRAError(
                    "a layer is applied to a tensor shared by all rows (DeBERTa's relative positions through "
                    "W_q, W_k), which per-row adapters cannot change row by row; batch one adapter at a time "
                    "or adapt v, o and the MLP only"
                )
            return ids[:1]
        if batch != len(ids):
            if batch % len(ids):
                raise LoRAError(f"a batch of {batch} rows but adapters named for {len(ids)}")
            ids = ids.repeat_interleave(batch // len(ids))  # generate() expands rows (beams) this way
        return ids


def _slots(present: Sequence[bool]) -> torch.Tensor:
    """Bank index (0 = none, 1..N) -> slot in a stack holding only the present adapters (0 = zeros)."""
    slot_of, n = [0], 0
    for p in present:
        n += p
        slot_of.append(n if p else 0)
    return torch.tensor(slot_of, dtype=torch.long)


class AdapterBankLayer(nn.Module):
    """A frozen base Linear or Conv1D plus N adapters' low-rank updates, chosen row by row."""

    def __init__(self, base: nn.Module, parts: dict[str, tuple[int, int]], rows: _Rows):
        super().__init__()
        self.base = base
        self.kind = _kind(base)
        self.parts = dict(parts)  # weight type -> (offset, width) in the base's output
        self._rows = rows
        for t in parts:
            self.register_buffer(f"A_{t}", None, persistent=False)
            self.register_buffer(f"B_{t}", None, persistent=False)

    def fill(self, adapters: Sequence[Adapter], site: str):
        """Stack the factors of the adapters that adapt this site (a missing part of one gets zeros)."""
        w = self.base.weight
        n_in = w.shape[1] if self.kind == "linear" else w.shape[0]
        here = [a for a in adapters if any((site, t) in a.factors for t in self.parts)]
        self.slot_of = _slots([a in here for a in adapters])
        # The relative positions of DeBERTa (through W_q): W0 alone for an adapter with microsoft's handling.
        self.positions_slot_of = self.slot_of.clone()
        for i, a in enumerate(adapters, start=1):
            if site in a.w0_positions:
                self.positions_slot_of[i] = 0
        for t, (_, width) in self.parts.items():
            mine = [a.factors.get((site, t)) for a in here]
            rank = max(f.A.shape[0] for f in mine if f is not None)
            A = torch.zeros(len(here) + 1, rank, n_in, dtype=w.dtype, device=w.device)
            B = torch.zeros(len(here) + 1, width, rank, dtype=w.dtype, device=w.device)
            for i, f in enumerate(mine, start=1):
                if f is not None:
                    A[i, : f.A.shape[0]] = f.A
                    B[i, :, : f.B.shape[1]] = f.B * f.scale
            setattr(self, f"A_{t}", A)
            setattr(self, f"B_{t}", B)

    def for_positions(self) -> nn.Module:
        """This layer as DeBERTa's relative positions see it (`lora.positions`): each adapter's choice."""
        return _PositionsView(self)

    def forward(self, x: torch.Tensor, slot_of: torch.Tensor | None = None) -> torch.Tensor:
        y = self.base(x)
        ids = self._rows.for_batch(x.shape[0], self.slot_of if slot_of is None else slot_of).to(x.device)
        b, out = x.shape[0], y.shape[-1]
        x3, y3 = x.reshape(b, -1, x.shape[-1]), y.reshape(b, -1, out)
        one = ids[0] if bool((ids == ids[0]).all()) else None  # a batch for one adapter: plain matmuls
        for t, (offset, width) in self.parts.items():
            A, B = getattr(self, f"A_{t}"), getattr(self, f"B_{t}")
            if one is not None:
                if one == 0:
                    continue
                delta = (x3 @ A[one].t()) @ B[one].t()
            else:
                A, B = A[ids], B[ids]  # (b, R, in), (b, width, R): each row's own factors
                delta = torch.bmm(torch.bmm(x3, A.transpose(1, 2)), B.transpose(1, 2))
            y3[..., offset : offset + width] += delta
        return y3.view(y.shape)

    def extra_repr(self) -> str:
        parts = ", ".join(f"{t}: R={getattr(self, f'A_{t}').shape[1]}" for t in self.parts)
        return f"{self.kind}, {getattr(self, f'A_{next(iter(self.parts))}').shape[0] - 1} adapters, {parts}"


class _PositionsView(nn.Module):
    """A bank layer applied with its positions' slots (0 for adapters that project positions with W0)."""

    def __init__(self, layer: AdapterBankLayer):
        super().__init__()
        object.__setattr__(self, "layer", layer)  # not a child module: a view, in place only for one call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x, self.layer.positions_slot_of)


class HeadBank(nn.Module):
    """A task head (classifier) with one set of weights per adapter, applied to each adapter's rows."""

    def __init__(self, head: nn.Module, states: Sequence[dict[str, torch.Tensor] | None], rows: _Rows):
        super().__init__()
        self.head = head
        self.states = [None] + [s for s in states if s is not None]  # slot 0: the base head's own weights
        self.slot_of = _slots([s is not None for s in states])
        self._rows = rows

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        ids = self._rows.for_batch(x.shape[0], self.slot_of).to(x.device)
        out = None
        for i in ids.unique().tolist():
            sel = (ids == i).nonzero().squeeze(1)
            state = self.states[i]
            part = (
                self.head(x[sel], *args, **kwargs)
                if state is None
                else functional_call(self.head, state, (x[sel], *args), kwargs)
            )
            if out is None:
                out = part.new_empty((x.shape[0], *part.shape[1:]))
            out[sel] = part
        return out


class AdapterBank:
    """The adapters loaded onto one model; `rows` says which one each row of the next calls uses."""

    def __init__(self, model: nn.Module, names: Sequence[str], rows: _Rows):
        self.model = model
        self.names = tuple(names)
        self._rows = rows
        self._index = {n: i for i, n in enumerate(self.names, start=1)}

    def ids(self, names: Sequence[str | None]) -> torch.Tensor:
        """Row indices for adapter names (None: the base model alone)."""
        unknown = [n for n in names if n is not None and n not in self._index]
        if unknown:
            raise LoRAError(f"unknown adapter {unknown[0]!r}; this bank holds {', '.join(self.names) or 'none'}")
        return torch.tensor([0 if n is None else self._index[n] for n in names], dtype=torch.long)

    @contextlib.contextmanager
    def rows(self, names: Sequence[str | None]) -> Iterator[None]:
        """Within this block, row i of every batch uses adapter ``names[i]``."""
        self._rows.ids = self.ids(names)
        try:
            yield
        finally:
            self._rows.ids = None

    def remove(self) -> nn.Module:
        """Put the plain base layers and head back (and DeBERTa's own position handling); returns the model."""
        remove_microsoft_positions(self.model)
        for name, module in list(self.model.named_modules()):
            if isinstance(module, AdapterBankLayer | HeadBank):
                _replace(self.model, name, module.base if isinstance(module, AdapterBankLayer) else module.head)
        return self.model

    def __repr__(self) -> str:
        return f"AdapterBank({len(self.names)} adapters: {', '.join(self.names)})"


def load(model: nn.Module, adapters: Mapping[str, str | os.PathLike]) -> AdapterBank:
    """Load adapters ``{name: file or folder}`` onto one plain base model, in place; returns the bank.

    Each adapter passes the checks of `lora.load` (format, model type, shapes). Names are plain
    identifiers (letters, digits, ``_.-``), so a name taken from a request can never be a path.
    """
    if any(isinstance(m, AdapterBankLayer) for m in model.modules()):
        raise LoRAError("the model already holds an adapter bank; call bank.remove() first")
    if not adapters:
        raise LoRAError("no adapters given; a bank needs at least one")
    for name in adapters:
        check_name(name)
    read_all = [read(model, name, path) for name, path in adapters.items()]
    rows = _Rows()
    parts: dict[str, dict[str, tuple[int, int]]] = {}
    for a in read_all:
        for (site, t), f in a.factors.items():
            parts.setdefault(site, {})[t] = (f.offset, f.width)
    for site, site_parts in parts.items():
        layer = AdapterBankLayer(model.get_submodule(site), site_parts, rows)
        layer.fill(read_all, site)
        _replace(model, site, layer)
    heads = family_heads(model)
    for head in sorted({h for a in read_all for n in a.head if (h := head_module(n, heads))}):
        states = [{n[len(head) + 1 :]: t for n, t in a.head.items() if n.startswith(head + ".")} or None
                  for a in read_all]  # fmt: skip
        _replace(model, head, HeadBank(model.get_submodule(head), states, rows))
    project_positions_with_w0(model, {site for a in read_all for site in a.w0_positions})
    return AdapterBank(model, list(adapters), rows)


def check_name(name: str):
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise LoRAError(f"adapter name {name!r} is not a plain name (letters, digits, '_', '.', '-'; no '..')")


__all__ = ["Adapter", "AdapterBank", "AdapterBankLayer", "Factors", "HeadBank", "check_name", "load", "read"]
