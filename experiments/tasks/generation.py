"""Batched beam search, the paper's decoding for E2E, WebNLG and DART: microsoft/LoRA's released loop
(`experiments/tasks/beam.py`, the default) or transformers' `generate` (`loop: transformers`).

Inputs arrive as token ids (the task builds them, special tokens included); each distinct input is decoded
once. Batches are left-padded (a decoder continues from its last real token) and sorted by length so that
little padding is computed; the results come back in the order of the inputs.

Where the released code (microsoft/LoRA's gpt2_beam.py and gpt2_decode.py) and other choices differ, a key says
which one runs (README, "The released pipeline's switches"):

    loop                released: its beam loop; transformers: generate(early_stopping=True), 2 x beams candidates
    no_repeat_scope     generated: n-grams repeated within the generated tokens are banned; all: the prompt's too
    ban_before_softmax  true: banned tokens are removed before the softmax (the rest renormalised); false: after
    blank_line_ends     true: a blank line ("\\n\\n", GPT-2's token 628) ends a hypothesis as the end-of-text does
    clean               released: cut at the end-of-text and at the first blank line, strip; first_line: first line
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
from .beam import beam_search

# microsoft/LoRA's decoding of E2E (its README: beam 10, length penalty 0.8, no-repeat 4-grams, 64 tokens; the
# paper's Table 11 says length penalty 0.9); tasks override these in conf/task/*.yaml.
DEFAULTS = {"num_beams": 10, "length_penalty": 0.8, "no_repeat_ngram_size": 4, "max_new_tokens": 64, "batch_size": 8,
            "min_new_tokens": 0, "loop": "released", "no_repeat_scope": "generated", "ban_before_softmax": True,
            "blank_line_ends": True, "clean": "released"}  # fmt: skip


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
    "min_new_tokens": ("an integer >= 0", lambda v: _int(v) and v >= 0),
    "loop": ("released or transformers", lambda v: v in ("released", "transformers")),
    "no_repeat_scope": ("generated or all", lambda v: v in ("generated", "all")),
    "ban_before_softmax": ("true or false", lambda v: isinstance(v, bool)),
    "blank_line_ends": ("true or false", lambda v: isinstance(v, bool)),
    "clean": ("released or first_line", lambda v: v in ("released", "first_line")),
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
    if s["loop"] == "transformers" and (s["no_repeat_scope"], s["ban_before_softmax"]) != ("all", False):
        raise DecodeError(
            "transformers' generate bans n-grams of the prompt too, after the softmax: with "
            "task.decoding.loop=transformers set no_repeat_scope=all and ban_before_softmax=false"
        )
    return s


@torch.inference_mode()
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
    s = {**s, "max_new_tokens": min(s["max_new_tokens"], room)}
    if s["loop"] == "released":
        rows = beam_search(model, [list(c) for c in chunk], s, end_ids(tokenizer, s), tokenizer.pad_token_id)
    else:
        rows = transformers_beam_search(model, tokenizer, chunk, s, device)
    return [clean(tokenizer.decode(row, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                  tokenizer.eos_token, s["clean"]) for row in rows]  # fmt: skip


def transformers_beam_search(model, tokenizer, chunk: list[tuple], s: dict, device) -> list[list[int]]:
    ids, mask = pad(chunk, tokenizer.pad_token_id, left=True)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        num_beams=s["num_beams"],
        length_penalty=s["length_penalty"],
        no_repeat_ngram_size=s["no_repeat_ngram_size"],
        max_new_tokens=s["max_new_tokens"],
        min_new_tokens=s["min_new_tokens"],
        early_stopping=True,
        do_sample=False,
        eos_token_id=end_ids(tokenizer, s),
        pad_token_id=tokenizer.pad_token_id,
    )
    return [row[ids.shape[1] :].tolist() for row in out]


def end_ids(tokenizer, s: dict) -> list[int]:
    """The tokens that end a hypothesis: end-of-text, and a blank line when `blank_line_ends` (the released
    script's `--eos_token_id 628`) and the tokenizer has one token for it."""
    ids = [tokenizer.eos_token_id]
    blank = tokenizer.encode("\n\n", add_special_tokens=False)
    if s["blank_line_ends"] and len(blank) == 1 and blank[0] not in ids:
        ids.append(blank[0])
    return ids


def clean(text: str, eos: str | None, how: str) -> str:
    """A decoded output as the metrics see it. `released`: as microsoft/LoRA's gpt2_decode.py, cut at the
    end-of-text and at the first blank line, stripped; `first_line`: the first line, stripped, end-of-text
    removed.

    >>> clean(" The Vaults is a pub . <|endoftext|>!!", "<|endoftext|>", "released")
    'The Vaults is a pub .'
    >>> clean(" A pub.\\nname[x]\\n\\nmore", "<|endoftext|>", "released")
    'A pub.\\nname[x]'
    >>> clean(" A pub.\\nname[x]", None, "first_line")
    'A pub.'
    """
    if eos:
        text = text.split(eos, 1)[0]
    if how == "released":
        return text.split("\n\n", 1)[0].strip()
    return text.strip().split("\n", 1)[0].strip()
