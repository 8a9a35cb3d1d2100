"""What every task shares: the interface the trainer calls (`Task`), an example, the error for bad task
input, and where the prefix methods' special tokens go in an input.

A task turns its files into examples and knows how to batch them, what the loss is and how to score a model
on them; the trainer knows nothing of the task beyond `Task`. `special` is the prefix methods' token ids
(``{"prefix": [...], "infix": [...]}``, set on the model by `baselines.prefix`) or None: where those tokens
stand in an input is the task's business, what they are is the method's.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from lora.files import read_text

Special = dict[str, list[int]] | None


@runtime_checkable
class Task(Protocol):
    """The interface between a task and the trainer (GLUE: `GlueTask`, NLG: `NLGTask`)."""

    name: str
    head: Literal["seq_cls", "causal_lm"]  # which head the model is built with
    num_labels: int | None  # classes of a seq_cls head (1 for a regression task); None for causal_lm
    max_length: int  # tokens of one training sequence
    metric: str  # the evaluation that selects the best step ...
    greater_is_better: bool  # ... and which way is better
    eval_splits: tuple[str, ...]  # evaluated during training; the first one selects

    def preflight(self) -> None:
        """Refuse at once what would only fail later (NLG: no Java for METEOR)."""

    def examples(self, split: str) -> Sequence[Any]:
        """The training or evaluation items of a split."""

    def batch(self, tokenizer, items: Sequence[Any], special: Special = None) -> dict[str, torch.Tensor]:
        """The tensors of one batch (labels included)."""

    def loss(self, outputs, batch: dict, label_smoothing: float) -> torch.Tensor:
        """The mean loss over the batch's units ..."""

    def units(self, batch: dict) -> int:
        """... and how many there are: examples, or completion tokens (the trainer weights by them)."""

    def predict(self, model, tokenizer, items: Sequence[Any], device, special: Special = None) -> list:
        """One output per item of one batch (the trainer spreads the batches over its processes)."""

    def metrics(self, outputs: list, items: Sequence[Any]) -> dict[str, float]:
        """The metrics of all outputs of a split, in item order."""

    def check_before_training(self, eval_sets: dict[str, Sequence[Any]]) -> None:
        """Refuse what the data would only make fail after training: GLUE a correlation over examples that
        cannot have one; NLG a decode split that does not read."""

    def final(self, model, tokenizer, folder: Path, device, special: Special = None) -> dict:
        """The last word on the finished model, files written into `folder` (NLG decodes the test set;
        GLUE has nothing to add)."""

    def baseline(self, train: Sequence[Any], eval_sets: dict[str, Sequence[Any]]) -> dict[str, float]:
        """The evaluated splits' scores of a constant answer, the line a trained model has to clear (GLUE: the
        training set's most common label); empty where there is none to give (generation)."""


class TaskError(ValueError):
    """Missing or malformed task data; the message names the file and what to do."""


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text", dict: "a mapping",
               type(None): "null"}  # fmt: skip


def type_mismatch(value, hint) -> str | None:
    """What `value` should be if it does not match the annotation `hint` (exactly: True is no integer, 1.0 no
    integer, but 1 is a number; empty text is no text: `data_dir=$UNSET` must not mean the default), else None;
    for the strict checks of configs.

    >>> type_mismatch(True, int | None), type_mismatch(1, float), type_mismatch("no", bool), type_mismatch("", str)
    ('an integer or null', None, 'true or false', 'text (not empty)')
    """
    allowed = set(typing.get_args(hint) or (hint,))
    if type(value) in allowed | ({int} if float in allowed else set()) and value != "":
        return None
    return " or ".join(_TYPE_NAMES[kind] + (" (not empty)" if kind is str else "") for kind in _TYPE_NAMES
                       if kind in allowed)  # fmt: skip


# --- the one place a task reads a data file ---------------------------------------------------------------------

# The files read inside `recording_reads()` (none outside one): what a run's data fingerprint is made of.
_reads: contextvars.ContextVar[dict[Path, dict] | None] = contextvars.ContextVar("task_data_reads", default=None)


def read_data(path: str | Path, hint: str = "") -> str:
    """The text of a task's data file (`lora.files.read_text`'s one-line errors, as `TaskError`). Every reader
    of every task reads its files through here, so a run can say which files it read (`recording_reads`)."""
    file = Path(path)
    if file.exists() and not file.is_file() and not file.is_dir():  # /dev/zero would be read for ever
        raise TaskError(f"{file} is not a regular file (a device, a pipe, a socket); give the data file itself")
    text = read_text(file, TaskError, hint=hint)
    reads = _reads.get()
    if reads is not None:
        with open(file, "rb") as f:  # streamed: cheap next to parsing the file, whatever its size
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        reads[file] = {"size": file.stat().st_size, "sha256": digest}
    return text


@contextlib.contextmanager
def recording_reads() -> Iterator[dict[Path, dict]]:
    """Collect every data file `read_data` reads inside the block: {path: {"size": bytes, "sha256": hex}}."""
    reads: dict[Path, dict] = {}
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: int | float


def insert_special_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special: dict,
    pad_id: int,
    token_type_ids: torch.Tensor | None = None,
):
    """[prefix] row [infix] for every row (right padding kept), as the prefix methods expect. With token types (a
    BERT pair), the prefix takes type 0 and the infix the type of the token it follows; returned third.

    >>> ids, mask = insert_special_tokens(torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]]),
    ...                                   {"prefix": [90], "infix": [91, 92]}, pad_id=0)
    >>> ids.tolist(), mask.tolist()
    ([[90, 5, 6, 91, 92, 0]], [[1, 1, 1, 1, 1, 0]])
    >>> _, _, types = insert_special_tokens(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 1]]),
    ...                                     {"prefix": [90], "infix": [91]}, 0, torch.tensor([[0, 1, 1]]))
    >>> types.tolist()
    [[0, 0, 1, 1, 1]]
    """  # fmt: skip
    n_prefix, n_infix = len(special["prefix"]), len(special["infix"])
    rows = [
        special["prefix"] + ids[m.bool()].tolist() + special["infix"]
        for ids, m in zip(input_ids, attention_mask, strict=True)
    ]
    width = input_ids.shape[1] + n_prefix + n_infix
    ids = torch.full((len(rows), width), pad_id, dtype=input_ids.dtype)
    mask = torch.zeros((len(rows), width), dtype=attention_mask.dtype)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=input_ids.dtype)
        mask[i, : len(row)] = 1
    if token_type_ids is None:
        return ids, mask
    types = torch.zeros_like(ids, dtype=token_type_ids.dtype)
    for i, (row_types, m) in enumerate(zip(token_type_ids, attention_mask, strict=True)):
        kept = row_types[m.bool()].tolist()
        last = kept[-1] if kept else 0
        row = [0] * n_prefix + kept + [last] * n_infix
        types[i, : len(row)] = torch.tensor(row, dtype=token_type_ids.dtype)
    return ids, mask, types
