"""Typed schema of the trainer config, registered with Hydra so typos and wrong types are refused, and the
range checks that types cannot express (`validate`).

The model, method and task groups are plain YAML (conf/); Hydra's struct mode refuses unknown keys
there too, and each builder validates its own fields (e.g. `lora.LoRAConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from .runs import RunError


@dataclass
class TrainerConfig:
    output_dir: str = "runs/unnamed"
    lr: float = 5e-4
    batch_size: int = 16
    eval_batch_size: int = 64
    epochs: float = 1.0
    max_steps: int | None = None  # caps the run (smoke tests); None = epochs decide
    warmup_ratio: float = 0.0  # of the total optimizer steps ...
    warmup_steps: int = 0  # ... or a fixed number (takes precedence when > 0)
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    bf16: bool = False  # single/ddp: autocast in bfloat16; deepspeed: its bf16 mode (bf16 weights, fp32 master copy)
    eval_every: int | None = None  # optimizer steps between evaluations; None = once per epoch
    save_every: int | None = None  # optimizer steps between checkpoints; None = at each evaluation
    eval_limit: int | None = None  # evaluate on the first N examples only (smoke tests)
    train_limit: int | None = None  # train on the first N examples only
    log_every: int = 20
    seed: int = 0
    threads: int | None = None  # torch threads; None = torch's default
    resume: str = "auto"  # auto: continue from a checkpoint in output_dir; never: refuse a used folder
    init_adapter: str | None = None  # start from the LoRA matrices of an adapter file (MRPC from MNLI)
    stop_after: int | None = None  # stop as if killed after this many optimizer steps (resume tests)
    # Where it trains (experiments/engines.py); conf/trainer/{ddp,deepspeed_zero2,...}.yaml set these.
    engine: str = "single"  # single | ddp | deepspeed; several processes come from torchrun
    zero_stage: int = 2  # DeepSpeed ZeRO stage, 2 or 3
    offload: bool = False  # DeepSpeed: optimizer states (and at stage 3 the parameters) in CPU memory


def validate(t: dict):
    """Range checks Hydra's types cannot express; one clear line each."""
    positive = ("lr", "batch_size", "eval_batch_size", "grad_accum", "log_every")
    for key in positive:
        if not t[key] > 0:
            raise RunError(f"trainer.{key} must be > 0, got {t[key]}")
    if t["max_steps"] is not None and t["max_steps"] < 0:
        raise RunError(f"trainer.max_steps must be >= 0 (0: evaluate the untrained model), got {t['max_steps']}")
    for key in ("eval_every", "save_every", "eval_limit", "train_limit", "stop_after"):
        if t[key] is not None and t[key] < 1:
            raise RunError(f"trainer.{key} must be >= 1 or null, got {t[key]}")
    if t["max_steps"] is None and not t["epochs"] > 0:
        raise RunError(f"trainer.epochs must be > 0 (or set trainer.max_steps), got {t['epochs']}")
    if not 0 <= t["warmup_ratio"] < 1 or t["warmup_steps"] < 0 or not 0 <= t["label_smoothing"] < 1:
        raise RunError("trainer.warmup_ratio and trainer.label_smoothing must be in [0, 1), warmup_steps >= 0")


class MissingSetting(ValueError):
    pass


def _must(what: str):
    """`${must:"..."}` marks a value the user has to give; resolving it says what and how."""
    raise MissingSetting(f"this experiment needs {what}")


def register():
    """Make the schema and our resolvers known to Hydra (idempotent)."""
    from omegaconf import OmegaConf

    ConfigStore.instance().store(group="trainer", name="trainer_schema", node=TrainerConfig)
    if not OmegaConf.has_resolver("must"):
        OmegaConf.register_new_resolver("must", _must)
