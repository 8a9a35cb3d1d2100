"""Decode and score a finished run again: ``python -m experiments.decode RUN --name NAME [--limit N] ...``.

The beam search itself is the task layer's (`experiments.tasks.generation`); this is only its command line
over a run folder, which `experiments.runs.load_trained` rebuilds.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path

import torch

import lora
from lora.files import write_text

from .cli import USER_ERRORS
from .runs import DECODES_DIR, PREDICTIONS_DIR, RunError, check_trained, load_trained, read_config
from .tasks import NLG_TASKS, build_task
from .tasks.generation import DEFAULTS


def decode_run(run: Path, name: str, limit: int | None = None, split: str | None = None, settings: dict | None = None):
    """Decode and score a run's trained model again (other decoding settings, a subset, another split), into
    `RUN/decodes/<name>/`; the run's own files are left as they are."""
    check_decode_name(name)
    out = run / DECODES_DIR / name
    if out.exists():
        raise RunError(f"{out} exists; choose another --name (decodes are never overwritten)")
    check_trained(run)
    saved = read_config(run)["task"]
    if saved.get("name") not in NLG_TASKS:
        raise RunError(
            f"{run} is a {saved.get('name')} run; only generation tasks ({', '.join(NLG_TASKS)}) are decoded"
        )
    overrides = {"decode_limit": limit, "decoding": {**saved.get("decoding", {}), **(settings or {})}}
    overrides["decode_split"] = split or saved.get("decode_split", "test")
    build_task({**saved, **overrides}).preflight()  # no Java for METEOR: refused before any model loads
    trained = load_trained(run, task_overrides=overrides)
    task, model = trained.task, trained.model
    if getattr(model, lora.model.CONFIG_ATTR, None) is not None:
        lora.merge(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    started = time.time()
    result = task.final(model, trained.tokenizer, out / PREDICTIONS_DIR, device, getattr(model, "special_tokens", None))
    result |= {"seconds": round(time.time() - started, 1), "decoding": task.decoding, "decode_limit": limit}
    write_text(json.dumps(result, indent=2) + "\n", out / "scores.json")
    return result


def check_decode_name(name: str):
    """A decode's name is one folder under RUN/decodes/: a path (absolute, with separators, `..`) would write
    outside the run folder, or over another decode.

    >>> check_decode_name("beam4")
    >>> check_decode_name("../x")
    Traceback (most recent call last):
    ...
    experiments.runs.RunError: --name '../x' must be a plain folder name (letters, digits, '.', '-', '_'), not a path
    """
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]{1,255}", name) or name.strip(".") == "":
        raise RunError(f"--name {name!r} must be a plain folder name (letters, digits, '.', '-', '_'), not a path")


def main(argv=None):
    """`python -m experiments.decode RUN --name NAME [--limit N] [--split S] [--set key=value ...]`."""
    import argparse

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
    if any("=" not in kv for kv in args.set):
        sys.exit(f"error: --set takes KEY=VALUE (e.g. length_penalty=0.9 loop=transformers), got {args.set}")
    settings = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    try:
        result = decode_run(args.run, args.name, args.limit, args.split, settings)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result["test"], indent=2))


def _value(text: str):
    """A --set value as Hydra reads one: a number or true/false if it is one, else the text.

    >>> _value("0.9"), _value("true"), _value("transformers")
    (0.9, True, 'transformers')
    """
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
