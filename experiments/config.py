"""Typed schema of the trainer config, registered with Hydra so typos and wrong types are refused, and the
range checks that types cannot express (`validate`).

The model, method and task groups are plain YAML (conf/); Hydra's struct mode refuses unknown keys
there too, and each builder validates its own fields (e.g. `lora.LoRAConfig`).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore

from .models import LORALIB_SUFFIXES
from .optimizers import OPTIMIZERS
from .runs import RunError
from .tasks.base import type_mismatch


@dataclass
class TrainerConfig:
    output_dir: str = "runs/unnamed"
    lr: float = 5e-4
    batch_size: int = 16
    eval_batch_size: int = 64  # examples per evaluation forward when length_batching is off
    length_batching: bool = True  # each step's examples sorted by length into micro-batches (experiments/batching.py)
    # length_batching: the most padded tokens (examples x longest; packed, real tokens) of a training forward; null:
    # batch_size / processes x task.max_length, the most an unsorted micro-batch holds, so memory never grows
    micro_batch_tokens: int | None = None
    # length_batching, evaluation; null: eval_batch_size x task.max_length (packed: 2,048 real tokens)
    eval_batch_tokens: int | None = None
    forward_cost_tokens: int = 48  # length_batching: a forward's fixed cost in padded tokens (CPU, MiniLM: 32-64 best)
    # each forward's sentences end to end in a few rows, no padding (experiments/packing.py): encoder classifiers
    # (BERT, RoBERTa) with a method that keeps the sequence. null: wherever it applies
    packing: bool | None = None
    epochs: float = 1.0
    max_steps: int | None = None  # caps the run (smoke tests); None = epochs decide
    warmup_ratio: float = 0.0  # of the total optimizer steps ...
    warmup_steps: int = 0  # ... or a fixed number (takes precedence when > 0) ...
    warmup_tokens: int = 0  # ... or as tokens, as the paper's GPT-3 runs give it (250,000): train.warmup_steps
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0  # microsoft/LoRA's NLG README trains with --clip 0.0: no clipping
    optimizer: str = "adamw"  # adamw: torch's; adamw_released: microsoft/LoRA's optimizer.py (experiments/optimizers)
    adam_eps: float | None = None  # None: the optimizer's default (torch 1e-8, released 1e-6)
    base_dropout: float | None = None  # every dropout of the base model; None: the checkpoint's (released GPT-2: 0)
    label_smoothing: float = 0.0
    # single/ddp: autocast in bfloat16; deepspeed: its bf16 mode (bf16 weights, fp32 master copy). null: the model's
    # measured verdict (conf/model/NAME.yaml `bf16`, docs/benchmarks.md), autocast on single/ddp only, else off
    bf16: bool | None = None
    eval_every: int | None = None  # optimizer steps between evaluations; None = once per epoch
    save_every: int | None = None  # optimizer steps between checkpoints; None = at each evaluation
    eval_limit: int | None = None  # evaluate on the first N examples only (smoke tests)
    train_limit: int | None = None  # train on the first N examples only
    log_every: int = 20
    seed: int = 0
    threads: int | None = None  # torch threads; None = torch's default
    resume: str = "auto"  # auto: continue from a checkpoint in output_dir; never: refuse a used folder
    init_adapter: str | None = None  # start from the LoRA matrices of an adapter file (MRPC from MNLI)
    eval_adapter: str | None = None  # evaluate this trained adapter (ours, PEFT's, a loralib .pt/.bin): max_steps=0
    adapter_alpha: float | None = None  # a loralib checkpoint's lora_alpha (its file does not store it)
    stop_after: int | None = None  # stop as if killed after this many optimizer steps (resume tests)
    # Where it trains (experiments/engines.py); conf/trainer/{ddp,deepspeed_zero2,...}.yaml set these.
    engine: str = "single"  # single | ddp | deepspeed; several processes come from torchrun
    zero_stage: int = 2  # DeepSpeed ZeRO stage, 2 or 3
    offload: bool = False  # DeepSpeed: optimizer states (and at stage 3 the parameters) in CPU memory


# Every numeric trainer setting and the values it may take: (what the message says, the test). Hydra's schema
# checks the types; this table the ranges, so `trainer.max_grad_norm=-1` (which would reverse the gradients) or
# `trainer.epochs=inf` is one line before anything runs, not a silent wrong run or a traceback later.
_INT32 = 2**32 - 1
RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("> 0", lambda v: v > 0),
    "batch_size": ("> 0", lambda v: v > 0),
    "eval_batch_size": ("> 0", lambda v: v > 0),
    "micro_batch_tokens": ("> 0 or null", lambda v: v > 0),
    "eval_batch_tokens": ("> 0 or null", lambda v: v > 0),
    "forward_cost_tokens": (">= 0", lambda v: v >= 0),
    "grad_accum": ("> 0", lambda v: v > 0),
    "log_every": ("> 0", lambda v: v > 0),
    "max_steps": (">= 0 (0: evaluate the untrained model) or null", lambda v: v >= 0),
    "epochs": ("> 0", lambda v: v > 0),
    "warmup_ratio": ("in [0, 1)", lambda v: 0 <= v < 1),
    "warmup_steps": (">= 0", lambda v: v >= 0),
    "warmup_tokens": (">= 0", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "max_grad_norm": (">= 0 (0 or null: no clipping)", lambda v: v >= 0),
    "label_smoothing": ("in [0, 1)", lambda v: 0 <= v < 1),
    "eval_every": (">= 1 or null", lambda v: v >= 1),
    "save_every": (">= 1 or null", lambda v: v >= 1),
    "eval_limit": (">= 1 or null", lambda v: v >= 1),
    "train_limit": (">= 1 or null", lambda v: v >= 1),
    "stop_after": (">= 1 or null", lambda v: v >= 1),
    "seed": (f"in [0, {_INT32}]", lambda v: 0 <= v <= _INT32),
    "threads": (">= 1 or null (torch's default)", lambda v: v >= 1),
    "adapter_alpha": ("> 0 or null", lambda v: v > 0),
    "adam_eps": ("> 0 or null (the optimizer's default)", lambda v: v > 0),
    "base_dropout": ("in [0, 1) or null (the checkpoint's)", lambda v: 0 <= v < 1),
}


def resolve_bf16(t: dict, model: dict, native: bool = True) -> bool:
    """trainer.bf16 as set, or (null) the model's measured verdict: autocast where its dev score matched fp32's
    (conf/model/NAME.yaml `bf16: true`) and the machine computes bf16 in hardware (`native`: without, autocast
    emulates it, 16-25x slower than fp32); off for DeepSpeed, whose bf16 mode (bf16 weights) was not measured.

    >>> safe = {"bf16": True}
    >>> [resolve_bf16({"bf16": None, "engine": e}, safe) for e in ("single", "ddp", "deepspeed")]
    [True, True, False]
    >>> resolve_bf16({"bf16": False, "engine": "single"}, safe), resolve_bf16({"bf16": None, "engine": "ddp"}, {})
    (False, False)
    >>> resolve_bf16({"bf16": None, "engine": "single"}, safe, native=False)  # an AVX2-only CPU
    False
    >>> resolve_bf16({"bf16": True, "engine": "single"}, safe, native=False)  # asked for: as set (train.py warns)
    True
    """
    if t["bf16"] is not None:
        return t["bf16"]
    return bool(model.get("bf16", False)) and t["engine"] != "deepspeed" and native


def validate(t: dict):
    """Check every trainer setting against its type in `TrainerConfig` (Hydra does too, but `run()` may be given a
    plain dict) and every numeric one against `RANGES`; one clear line for the first that is wrong."""
    _check_types(t)
    for key, (allowed, ok) in RANGES.items():
        value = t.get(key)
        if value is None and "null" in allowed:
            continue
        if key == "epochs" and t.get("max_steps") is not None:
            continue  # max_steps decides
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RunError(f"trainer.{key} must be a number {allowed}, got {value!r}")
        if not math.isfinite(value) or not ok(value):
            hint = " (or set trainer.max_steps)" if key == "epochs" else ""
            raise RunError(f"trainer.{key} must be {allowed}{hint}, got {value}")
    if t.get("eval_adapter") and (t.get("max_steps") != 0 or t.get("init_adapter")):
        raise RunError("trainer.eval_adapter evaluates a trained adapter: set trainer.max_steps=0 and no "
                       "trainer.init_adapter (to train on from an adapter, use trainer.init_adapter)")  # fmt: skip
    if t.get("optimizer") not in OPTIMIZERS:
        raise RunError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.get('optimizer')!r}")
    if t.get("resume") not in ("auto", "never"):
        raise RunError(f"trainer.resume must be auto or never, got {t.get('resume')!r}")
    adapter = t.get("eval_adapter")
    if t.get("adapter_alpha") is not None and Path(adapter or "").suffix not in LORALIB_SUFFIXES:
        given = f"{adapter} stores its own alpha" if adapter else "no trainer.eval_adapter is given"
        raise RunError(f"trainer.adapter_alpha is for a loralib checkpoint ({', '.join(LORALIB_SUFFIXES)}) given as "
                       f"trainer.eval_adapter, which stores no alpha; {given}: drop trainer.adapter_alpha")  # fmt: skip


_TYPES = typing.get_type_hints(TrainerConfig)  # what each setting may hold: {"max_steps": int | None, ...}


def _check_types(t: dict):
    """Every key a TrainerConfig field, every value of its type: an integer-like option takes no float or bool
    (`batch_size=1.5`, `max_steps=true`), a switch no text (`bf16="no"` would be true)."""
    unknown = sorted(set(t) - set(_TYPES))
    if unknown:
        raise RunError(f"trainer has no setting {', '.join(unknown)}; its settings: {', '.join(_TYPES)}")
    for key, value in t.items():
        if expected := type_mismatch(value, _TYPES[key]):
            raise RunError(f"trainer.{key} must be {expected}, got {value!r}")


class MissingSetting(ValueError):
    pass


def _must(what: str):
    """`${must:"..."}` marks a value the user has to give; resolving it says what and how."""
    raise MissingSetting(f"this experiment needs {what}")


def _job_suffix() -> str:
    """`${job_suffix:}`: "-N" for the N-th job of a Hydra multirun, "" otherwise, so that the default run folder
    of each job of a sweep started within one second is its own (`${now:}` alone gives them all one folder)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return ""
    hydra = HydraConfig.get()
    return f"-{hydra.job.num}" if hydra.mode == RunMode.MULTIRUN else ""


def register():
    """Make the schema and our resolvers known to Hydra (idempotent)."""
    from omegaconf import OmegaConf

    ConfigStore.instance().store(group="trainer", name="trainer_schema", node=TrainerConfig)
    if not OmegaConf.has_resolver("must"):
        OmegaConf.register_new_resolver("must", _must)
    if not OmegaConf.has_resolver("job_suffix"):
        OmegaConf.register_new_resolver("job_suffix", _job_suffix)
