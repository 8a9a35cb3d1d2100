"""`LoRALayer`: a frozen Linear, GPT-2 Conv1D or Embedding plus low-rank updates, the one LoRA layer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import LoRAError


@dataclass(frozen=True)
class Slot:
    """One low-rank update Delta W = scale * B A, added to outputs [offset, offset + width) of the base."""

    offset: int
    width: int
    rank: int
    scale: float


class LoRALayer(nn.Module):
    """y = base(x) + sum over slots of scale * B (A x), on each slot's slice of the output.

    A plain layer has one slot covering its whole output. GPT-2's fused ``c_attn`` (outputs [q | k | v])
    has one slot per adapted part, as loralib's MergedLinear, and the forward pass never builds the
    full Delta W: it costs one (r x d) and one (d x r) product per slot.

    Parameters are ``lora_A[t]`` of shape (r, in) and ``lora_B[t]`` of shape (width, r) for each
    weight type t, so adapter files name the weight type of every matrix.

    >>> base = nn.Linear(4, 6)
    >>> layer = LoRALayer(base, {"q": Slot(0, 6, rank=2, scale=1.0)})
    >>> x = torch.randn(3, 4)
    >>> torch.equal(layer(x), base(x))  # B starts at zero
    True
    >>> tuple(layer.lora_A["q"].shape), tuple(layer.lora_B["q"].shape)
    ((2, 4), (6, 2))
    """

    def __init__(self, base: nn.Module, slots: dict[str, Slot], dropout: float = 0.0, init: str = "gaussian"):
        super().__init__()
        self.base = base
        self.kind = _kind(base)
        self.slots = dict(slots)
        self.merged = False
        self.dropout = nn.Dropout(dropout) if dropout > 0 and self.kind != "embedding" else nn.Identity()
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.ParameterDict(
            {t: nn.Parameter(torch.empty(s.rank, in_features(base), **kw)) for t, s in slots.items()}
        )
        self.lora_B = nn.ParameterDict({t: nn.Parameter(torch.empty(s.width, s.rank, **kw)) for t, s in slots.items()})
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "gaussian"):
        """Delta W = 0 at the start: one factor random, the other zero (A random, B zero, as the paper;
        for embeddings A zero and B random, as loralib and PEFT)."""
        for t, s in self.slots.items():
            a, b = self.lora_A[t], self.lora_B[t]
            if self.kind == "embedding":
                a.zero_()
                nn.init.normal_(b)
            elif init == "kaiming_uniform":
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                b.zero_()
            else:
                nn.init.normal_(a, std=1.0 / s.rank)
                b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        types = list(self.slots)
        A = self.lora_A[types[0]] if len(types) == 1 else torch.cat([self.lora_A[t] for t in types])
        if self.kind == "embedding":
            h = F.embedding(x, A.t(), self.base.padding_idx)
        else:
            h = F.linear(self.dropout(x), A)
        out = y.shape[-1]
        y2, h2 = y.reshape(-1, out), h.reshape(-1, h.shape[-1])
        start = 0
        for t in types:
            s = self.slots[t]
            hs = h2[:, start : start + s.rank]
            start += s.rank
            if s.width == out:
                # One fused GEMM: y + scale * (h B^T), no temporary of the output's size.
                y2 = torch.addmm(y2, hs, self.lora_B[t].t(), alpha=s.scale)
            else:
                # In place on the fresh base output (its backward never reads it); the delta is computed
                # out of place so autocast picks its dtype, then cast to the output's.
                delta = F.linear(hs, self.lora_B[t])
                y2.narrow(1, s.offset, s.width).add_(delta.to(y2.dtype), alpha=s.scale)
        return y2.view(y.shape)

    def delta_weight(self, weight_type: str) -> torch.Tensor:
        """scale * B A in the (out, in) convention of the paper, in float32."""
        s = self.slots[weight_type]
        return s.scale * (self.lora_B[weight_type].float() @ self.lora_A[weight_type].float())

    def _weight_slice(self, weight_type: str) -> torch.Tensor:
        s = self.slots[weight_type]
        return weight_slice(self.base, s.offset, s.width)

    @torch.no_grad()
    def merge(self):
        """W <- W + Delta W; the forward pass then costs what the base layer costs. No-op if merged."""
        if getattr(self, "merge_refused", None):
            raise LoRAError(self.merge_refused)
        if not self.merged:
            for t in self.slots:
                view = self._weight_slice(t)
                view.copy_((view.float() + self.delta_weight(t)).to(view.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """W <- W - Delta W. No-op if not merged."""
        if self.merged:
            for t in self.slots:
                view = self._weight_slice(t)
                view.copy_((view.float() - self.delta_weight(t)).to(view.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        slots = ", ".join(
            f"{t}: r={s.rank} scale={s.scale:g} out[{s.offset}:{s.offset + s.width}]" for t, s in self.slots.items()
        )
        return f"{self.kind}, {slots}" + (", merged" if self.merged else "")


def weight_slice(base: nn.Module, offset: int, width: int) -> torch.Tensor:
    """View of outputs [offset, offset + width) of a base layer's weight, in (out, in) orientation."""
    if isinstance(base, nn.Linear):  # stored (out, in)
        return base.weight.narrow(0, offset, width)
    return base.weight.narrow(1, offset, width).t()  # Conv1D and Embedding store (in, out)


def in_features(base: nn.Module) -> int:
    """Input size of a Linear, Conv1D (weight stored (in, out)) or Embedding (its vocabulary)."""
    return base.weight.shape[1] if isinstance(base, nn.Linear) else base.weight.shape[0]


def _kind(base: nn.Module) -> str:
    if isinstance(base, nn.Linear):
        return "linear"
    if isinstance(base, nn.Embedding):
        return "embedding"
    if type(base).__name__ == "Conv1D":
        return "conv1d"
    raise TypeError(f"LoRALayer cannot wrap {type(base).__name__}")
