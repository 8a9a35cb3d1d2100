"""Batched beam search through transformers' `generate`, the paper's decoding for E2E, WebNLG and DART.

Inputs arrive as token ids (the task builds them, special tokens included); each distinct input is decoded
once. Batches are left-padded (a decoder continues from its last real token) and sorted by length so that
little padding is computed; the results come back in the order of the inputs.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from tqdm import tqdm

from lora.model import max_positions
from lora.padding import pad

from .base import TaskError

# The paper's Table 11 (E2E); tasks override these in conf/task/*.yaml.
DEFAULTS = {"num_beams": 10, "length_penalty": 0.9, "no_repeat_ngram_size": 4, "max_new_tokens": 64, "batch_size": 8}


log = logging.getLogger("lora.train.decode")  # into the run's log.txt, also when no progress bar is shown


class DecodeError(TaskError):
    """Decoding settings that cannot work with this model or input."""


# What each setting may be: (what the message says, the test). Checked when the task is built, so a bad
# setting is refused before training instead of failing after it.
_ALLOWED = {
    "num_beams": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "length_penalty": ("a finite number", lambda v: _number(v) and math.isfinite(v)),
    "no_repeat_ngram_size": ("an integer >= 0 (0: no ban)", lambda v: _int(v) and v >= 0),
    "max_new_tokens": ("an integer >= 1", lambda v: _int(v) and v >= 1),
    "batch_size": ("an integer >= 1", lambda v: _int(v) and v >= 1),
}


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def decoding_settings(settings: dict | None) -> dict:
    """`DEFAULTS` updated by `settings`, each checked; a DecodeError names the first bad one.

    >>> decoding_settings({"num_beams": 0})
    Traceback (most recent call last):
    ...
    experiments.tasks.generation.DecodeError: task.decoding.num_beams must be an integer >= 1, got 0
    """
    s = {**DEFAULTS, **(settings or {})}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise DecodeError(f"unknown decoding settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    for key, (allowed, ok) in _ALLOWED.items():
        if not ok(s[key]):
            raise DecodeError(f"task.decoding.{key} must be {allowed}, got {s[key]!r}")
    return s


@torch.no_grad()
def generate(
    model, tokenizer, contexts: list[list[int]], settings: dict | None, device, desc: str = "decode"
) -> list[str]:
    """The decoded completion of every context (one line each: cut at the first newline, stripped)."""
    s = decoding_settings(settings)
    unique = list(dict.fromkeys(map(tuple, contexts)))
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    texts: dict[tuple, str] = {}
    bar = tqdm(total=len(unique), desc=desc, unit="input", disable=None)
    started, every = time.time(), max(len(order) // 10, 1)
    for start in range(0, len(order), s["batch_size"]):
        chunk = [unique[i] for i in order[start : start + s["batch_size"]]]
        for ctx, text in zip(chunk, _generate_batch(model, tokenizer, chunk, s, device), strict=True):
            texts[ctx] = text
        bar.update(len(chunk))
        if (start + len(chunk)) // every > start // every:
            log.info("%s: %d/%d inputs, %.0f s", desc, start + len(chunk), len(order), time.time() - started)
    bar.close()
    return [texts[tuple(c)] for c in contexts]


def _generate_batch(model, tokenizer, chunk: list[tuple], s: dict, device) -> list[str]:
    width = max(map(len, chunk))
    room = max_positions(model.config) - width
    if room < 1:
        raise DecodeError(
            f"an input of {width} tokens leaves no room to generate (the model takes {room + width}); "
            "lower task.max_length or use a model with more positions"
        )
    ids, mask = pad(chunk, tokenizer.pad_token_id, left=True)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        num_beams=s["num_beams"],
        length_penalty=s["length_penalty"],
        no_repeat_ngram_size=s["no_repeat_ngram_size"],
        max_new_tokens=min(s["max_new_tokens"], room),
        early_stopping=True,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return [_clean(tokenizer.decode(row[width:], skip_special_tokens=True)) for row in out]


def _clean(text: str) -> str:
    """First line only, as microsoft/LoRA's decoder cuts its predictions.

    >>> _clean(" The Vaults is a pub.\\nname[x]")
    'The Vaults is a pub.'
    """
    text = text.strip()
    return text.split("\n", 1)[0].strip()
