"""Batched beam search through transformers' `generate`, the paper's decoding for E2E, WebNLG and DART.

Inputs arrive as token ids (the task builds them, special tokens included); each distinct input is decoded
once. Batches are left-padded (a decoder continues from its last real token) and sorted by length so that
little padding is computed; the results come back in the order of the inputs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from .tasks.base import TaskError

# The paper's Table 11 (E2E); tasks override these in conf/task/*.yaml.
DEFAULTS = {"num_beams": 10, "length_penalty": 0.9, "no_repeat_ngram_size": 4, "max_new_tokens": 64, "batch_size": 8}


log = logging.getLogger("lora.train.decode")  # into the run's log.txt, also when no progress bar is shown


class DecodeError(TaskError):
    """Decoding settings that cannot work with this model or input."""


@torch.no_grad()
def generate(
    model, tokenizer, contexts: list[list[int]], settings: dict | None, device, desc: str = "decode"
) -> list[str]:
    """The decoded completion of every context (one line each: cut at the first newline, stripped)."""
    s = {**DEFAULTS, **(settings or {})}
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise DecodeError(f"unknown decoding settings {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
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
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(c)) + list(c) for c in chunk], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk], device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=s["num_beams"],
        length_penalty=s["length_penalty"],
        no_repeat_ngram_size=s["no_repeat_ngram_size"],
        max_new_tokens=min(s["max_new_tokens"], room),
        early_stopping=True,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    return [_clean(tokenizer.decode(row[width:], skip_special_tokens=True)) for row in out]


def _clean(text: str) -> str:
    """First line only, as microsoft/LoRA's decoder cuts its predictions.

    >>> _clean(" The Vaults is a pub.\\nname[x]")
    'The Vaults is a pub.'
    """
    text = text.strip()
    return text.split("\n", 1)[0].strip()


def max_positions(config) -> int:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9


def decode_run(run: Path, name: str, limit: int | None = None, split: str | None = None, settings: dict | None = None):
    """Decode and score a run's trained model again (other decoding settings, a subset, another split), into
    `RUN/decodes/<name>/`; the run's own files are left as they are."""
    import baselines
    import lora
    from lora.io import load_tensors, read_safetensors

    from .models import build, load_tokenizer
    from .runs import RunError
    from .tasks import build_task

    out = run / "decodes" / name
    if out.exists():
        raise RunError(f"{out} exists; choose another --name (decodes are never overwritten)")
    adapter = run / "adapter.safetensors"
    if not (run / "config.yaml").exists() or not adapter.exists():
        raise RunError(f"{run} holds no trained run (config.yaml and adapter.safetensors are needed)")
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    task_cfg = {
        **cfg["task"],
        "decode_limit": limit,
        "decoding": {**cfg["task"].get("decoding", {}), **(settings or {})},
    }
    task_cfg["decode_split"] = split or task_cfg.get("decode_split", "test")
    task = build_task(task_cfg)
    task.preflight()
    tokenizer = load_tokenizer(cfg["model"])
    model = baselines.prepare(build(cfg["model"], head=task.head, seed=cfg["trainer"]["seed"]), cfg["method"])
    tensors, _ = read_safetensors(adapter)
    load_tensors(model, tensors, source=adapter, base_model=cfg["model"]["name"])
    if getattr(model, lora.model.CONFIG_ATTR, None) is not None:
        lora.merge(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    started = time.time()
    result = task.final(model, tokenizer, out, device, getattr(model, "special_tokens", None))
    result |= {"seconds": round(time.time() - started, 1), "decoding": task.decoding, "decode_limit": limit}
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None):
    """`python -m experiments.decode RUN --name NAME [--limit N] [--split S] [--set key=value ...]`."""
    import argparse

    from .cli import USER_ERRORS

    p = argparse.ArgumentParser(prog="python -m experiments.decode", description=decode_run.__doc__)
    p.add_argument("run", type=Path, help="a run folder (config.yaml + adapter.safetensors)")
    p.add_argument("--name", required=True, help="subfolder of RUN/decodes/ for this decode")
    p.add_argument("--limit", type=int, default=None, help="decode the first N distinct inputs only")
    p.add_argument("--split", default=None, help="split to decode (default: the task's decode_split)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help=f"decoding settings: {', '.join(DEFAULTS)}"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        settings = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    except ValueError:
        sys.exit(f"error: --set takes KEY=VALUE with a number or true/false value, got {args.set}")
    try:
        result = decode_run(args.run, args.name, args.limit, args.split, settings)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result["test"], indent=2))


if __name__ == "__main__":
    main()
