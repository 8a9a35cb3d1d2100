"""Packed forwards for encoder classifiers: a micro-batch's sentences end to end in a few rows, no padding.

A padded micro-batch of short sentences spends most of its forward on padded tokens, or (sorted by length and cut
into several micro-batches, `experiments.batching`) on the fixed cost of each extra forward: on MiniLM-L6 in bf16
a forward and backward of 16 tokens costs as much as one of 130 (each matrix product re-reads its frozen weight).
Packed, a step's 32 SST-2 sentences run as one forward over their real tokens only: transformers reads restarting
`position_ids` with no attention mask as sequences laid end to end and builds the block-diagonal attention mask
itself (`masking_utils.find_packed_sequence_indices`, BERT and RoBERTa), so each sentence attends to itself
alone, at its own positions, exactly as it would padded. Written by hand: only the classification head, which
reads the first token of each row, needs telling where each sentence starts, and attention, written out in
training (`attention`: faster than SDPA's math kernel on packed rows).

`enable(model)` makes the model pack every padded batch it is called with (two forward hooks; the call, its
inputs and its logits keep their shapes, so engines, losses and evaluation do not change). The logits equal the
padded forward's up to float rounding (tests/experiments/test_packing.py); under dropout the masks differ, as
with any other grouping of the same examples, and are drawn by numpy's PCG64 (`experiments.cpu_dropout`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_dropout
from .runs import RunError

ROW_MULTIPLE = 16  # rows are padded to a multiple of this: few distinct shapes, each kernel prepared once
# Tokens of a packed evaluation forward (`forwards`) when trainer.eval_batch_tokens is null. Larger is slower on a
# CPU, its activations outgrowing the caches: all 872 SST-2 dev sentences (MiniLM-L6, bf16, one thread) took 2.55 s
# in forwards of 8,192 tokens, 1.95 s at 2,048, 1.9 s at 1,024.
EVAL_TOKENS = 2048


@dataclass(frozen=True)
class Packable:
    first_token_reader: str  # the head module that reads token 0 of each row (module path in the task model)
    position_start: str  # "zero", or "after_pad" (RoBERTa numbers positions from pad_token_id + 1)


# model_type -> how its sequence classifier packs. DeBERTa-v2 builds its own relative-position attention mask
# (no packed sequences); decoders classify from each sequence's last token under a causal mask: not here.
PACKABLE = {
    "bert": Packable("bert.pooler", "zero"),
    "roberta": Packable("classifier", "after_pad"),
}
# Methods that leave a sequence as it is: prefix methods add tokens or keys, which packing would hand to the
# wrong sentence.
PACKABLE_METHODS = ("lora", "full_ft", "ft_top2", "head_only", "bitfit", "adapter_h", "adapter_l", "adapter_p",
                    "adapter_d")  # fmt: skip


def why_not(model_type: str, method: str, head: str) -> str | None:
    """Why a run of this model, method and task head cannot pack, or None if it can.

    >>> why_not("bert", "lora", "seq_cls") is None
    True
    >>> why_not("gpt2", "lora", "seq_cls")
    'gpt2 is not an encoder classifier packing supports (bert, roberta)'
    >>> why_not("roberta", "prefix_embed", "seq_cls")
    'method prefix_embed changes the sequence'
    """
    if head != "seq_cls":
        return f"the task's head is {head}, not a sequence classifier"
    if model_type not in PACKABLE:
        return f"{model_type} is not an encoder classifier packing supports ({', '.join(PACKABLE)})"
    if method not in PACKABLE_METHODS:
        return f"method {method} changes the sequence"
    return None


def resolve(asked: bool | None, model_type: str, method: str, head: str) -> bool:
    """trainer.packing as set, or (null) wherever it applies; asked for where it cannot: one line why.

    >>> resolve(None, "bert", "lora", "seq_cls"), resolve(None, "llama", "lora", "causal_lm")
    (True, False)
    >>> resolve(True, "deberta-v2", "lora", "seq_cls")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    experiments.runs.RunError: trainer.packing=true, but deberta-v2 is not an encoder classifier packing ... or false
    """
    why = why_not(model_type, method, head)
    if asked and why:
        raise RunError(f"trainer.packing=true, but {why}; set trainer.packing=null (packs where it can) or false")
    return why is None if asked is None else asked


def row_width(lengths: list[int]) -> int:
    """The rows' width: the longest sequence, rounded up to `ROW_MULTIPLE`.

    >>> row_width([5, 17, 3])
    32
    """
    return -(-max(lengths) // ROW_MULTIPLE) * ROW_MULTIPLE


def rows_of(lengths: list[int], width: int) -> list[list[int]]:
    """Sequences (positions into `lengths`) placed in rows of `width` tokens, longest first, each in the first row
    with room (first-fit decreasing: every row but one at least half full).

    >>> rows_of([5, 9, 3, 7, 2], width=10)
    [[1], [3, 2], [0, 4]]
    """
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = next((k for k, free in enumerate(room) if free >= lengths[i]), len(rows))
        if k == len(rows):
            rows.append([])
            room.append(width)
        rows[k].append(i)
        room[k] -= lengths[i]
    return rows


def layout(lengths: list[int], widen: bool = False) -> tuple[list[list[int]], int]:
    """The rows (`rows_of`) these sequences pack into and their width: the narrowest that holds the longest
    (`row_width`), or (`widen`) the width up to twice that computing the fewest tokens, rows x width (the
    narrower of a tie). Training keeps rows narrow: attention, its dropout and their backward grow with the
    width. Evaluation widens: its attention is cheap, its tokens are not.

    >>> layout([5, 17, 3])
    ([[1, 0, 2]], 32)
    >>> layout([17, 17, 17, 17]), layout([17, 17, 17, 17], widen=True)
    (([[0], [1], [2], [3]], 32), ([[0, 1], [2, 3]], 48))
    """
    narrowest = row_width(lengths)
    widths = range(narrowest, 2 * narrowest + 1, ROW_MULTIPLE) if widen else [narrowest]
    return min(((rows_of(lengths, w), w) for w in widths), key=lambda rows_width: len(rows_width[0]) * rows_width[1])


def forwards(lengths: list[int], budget: int) -> list[list[int]]:
    """An evaluation's sequences (positions into `lengths`) in packed forwards of about `budget` tokens: all of
    them in rows as wide as the longest (`rows_of`), the rows taken `budget // width` at a time. Sorted by length
    and cut at `budget` instead, each forward's sentences would be of one length, and rows of them half empty
    (SST-2's dev set: 1.33 tokens computed per real token, against 1.01 here; 2.1 s against 1.6 s in bf16).

    >>> forwards([9, 3, 7, 5, 1], budget=20)  # rows of 16: 9 + 7, then 5 + 3 + 1; one row a forward
    [[0, 2], [3, 1, 4]]
    """
    if not lengths:
        return []
    width = row_width(lengths)
    rows, per = rows_of(lengths, width), max(1, budget // width)
    return [[i for row in rows[k : k + per] for i in row] for k in range(0, len(rows), per)]


def pack(
    batch: dict[str, torch.Tensor], pad_id: int, start: int, widen: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A padded batch (input_ids, attention_mask, token_type_ids) as packed rows (`layout`): (inputs for the
    model, each sequence's first token as a flat index into its rows, in the batch's order).

    >>> ids = torch.tensor([[101, 7, 102, 0], [101, 102, 0, 0], [101, 8, 9, 102]])
    >>> inputs, first = pack({"input_ids": ids, "attention_mask": (ids > 0).long()}, pad_id=0, start=0)
    >>> inputs["input_ids"].tolist()
    [[101, 8, 9, 102, 101, 7, 102, 101, 102, 0, 0, 0, 0, 0, 0, 0]]
    >>> inputs["position_ids"].tolist()  # the row's tail: pad tokens at the first position, each on its own
    [[0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0]]
    >>> first.tolist()
    [4, 7, 0]
    """
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1).tolist()
    rows, width = layout(lengths, widen)
    offset = [0] * len(lengths)  # each sequence's first token, as a flat index into the rows
    for r, members in enumerate(rows):
        at = r * width
        for i in members:
            offset[i], at = at, at + lengths[i]
    first = torch.tensor(offset)
    length = torch.tensor(lengths)
    # Every real token's flat place: its sequence's first place plus its position in the sequence (counted over
    # the mask, so the padding may be on either side).
    positions = (mask.cumsum(1) - 1)[mask]
    places = first.repeat_interleave(length) + positions
    # The tail of each row: pad tokens all at the first position, each a sequence of its own to transformers (it
    # attends only to itself), never past the model's positions however wide the row.
    flat = len(rows) * width
    inputs = {"input_ids": torch.full((flat,), pad_id, dtype=torch.long), "position_ids": torch.full((flat,), start)}
    inputs["input_ids"][places] = batch["input_ids"][mask]
    inputs["position_ids"][places] = positions + start
    if "token_type_ids" in batch:
        inputs["token_type_ids"] = torch.zeros(flat, dtype=torch.long)
        inputs["token_type_ids"][places] = batch["token_type_ids"][mask]
    return {k: v.view(len(rows), width) for k, v in inputs.items()}, first


_PADDED = ("input_ids", "attention_mask", "token_type_ids")  # what a padded batch holds and packing replaces


ATTENTION = "packed"  # the name transformers' attention registry knows `attention` by


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over packed rows. In training, in fp32 as `engines.attention_in_fp32` has it (bf16 projections
    enter exactly; torch's CPU attention is slow backward in bf16), and with dropout on the CPU written out
    instead of SDPA: SDPA's math kernel converts the boolean mask to an additive one in every layer and guards
    against fully masked rows, which packed rows never have (a row's pad tail attends to itself), and its dropout
    draws from torch's slow CPU generator (`experiments.cpu_dropout`); without the three a packed MiniLM-L6
    step in bf16 is 10% faster. In evaluation, SDPA in the projections' dtype, as autocast runs it (MiniLM-L6's
    packed SST-2 evaluation in bf16: 2.1-2.3 s against 2.5 s in fp32).
    """
    if not module.training:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        if dropout and q.device.type == "cpu":
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scaling or q.shape[-1] ** -0.5)
            if attention_mask is not None:
                scores.add_(_additive(attention_mask))
            out = torch.matmul(cpu_dropout.dropout(torch.softmax(scores, -1), dropout), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous().to(query.dtype), None


_last_mask: list = [None, None]  # (mask, its additive form): transformers hands every layer the same mask


def _additive(mask: torch.Tensor) -> torch.Tensor:
    """A boolean attention mask (True: attend) as 0 / -inf to add to the scores; made once per forward."""
    if mask.dtype != torch.bool:
        return mask
    if _last_mask[0] is not mask:
        _last_mask[:] = [mask, torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))]
    return _last_mask[1]


@functools.cache
def _register_attention():
    """Once a process: transformers' registries learn ATTENTION, with SDPA's boolean mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


class Packer:
    """The hooks `enable` installs: the model's call packs its padded inputs, the head reads each sequence's first
    token instead of each row's; attention runs as `attention`, dropout as `cpu_dropout.Dropout`."""

    def __init__(self, model: nn.Module, packable: Packable):
        _register_attention()
        self.model, self.attention = model, model.config._attn_implementation
        model.set_attn_implementation(ATTENTION)
        self.dropouts = cpu_dropout.replace_dropouts(model)
        config = model.config
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        self.start = config.pad_token_id + 1 if packable.position_start == "after_pad" else 0
        self.first: torch.Tensor | None = None
        reader = model.get_submodule(packable.first_token_reader)
        self.handles = [
            model.register_forward_pre_hook(self._pack_inputs, with_kwargs=True),
            model.register_forward_hook(self._done, always_call=True),
            reader.register_forward_pre_hook(self._first_tokens),
        ]

    def _pack_inputs(self, module, args, kwargs):
        if args or kwargs.get("attention_mask") is None or kwargs.get("input_ids") is None:
            return None  # not a padded batch of token ids (positional inputs, embeddings): as it is
        ids = kwargs["input_ids"]
        padded = {k: v.cpu() for k, v in kwargs.items() if k in _PADDED}
        inputs, first = pack(padded, self.pad_id, self.start, widen=not module.training)
        self.first = first.to(ids.device)
        kwargs = {k: v for k, v in kwargs.items() if k not in _PADDED}
        kwargs |= {k: v.to(ids.device) for k, v in inputs.items()}
        return args, kwargs  # attention_mask left out: transformers builds the packed one from position_ids

    def _first_tokens(self, module, args):
        if self.first is None:
            return None
        hidden = args[0]
        return (hidden.flatten(0, 1)[self.first].unsqueeze(1), *args[1:])

    def _done(self, module, args, output):
        self.first = None

    def remove(self):
        for h in self.handles:
            h.remove()
        self.model.set_attn_implementation(self.attention)
        cpu_dropout.restore(self.dropouts)


def enable(model: nn.Module) -> Packer:
    """Pack every padded batch `model` (a transformers sequence classifier of a `PACKABLE` family) is called with,
    until `.remove()`."""
    return Packer(model, PACKABLE[model.config.model_type])
