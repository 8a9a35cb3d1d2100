"""`LoRAConfig`: what to adapt, with which rank and scale, and how to initialise it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WEIGHT_TYPES = ("q", "k", "v", "o", "mlp_in", "mlp_out", "embed")
BIAS_MODES = ("none", "all", "lora_only")
# How A starts (B starts at zero, so Delta W = 0), named after what it draws and who draws it that way:
# gaussian: A ~ N(0, 1/r^2), PEFT's init_lora_weights="gaussian" (the paper's text says only "random Gaussian");
# kaiming_uniform: loralib's Kaiming-uniform A (a = sqrt(5)), the init of microsoft/LoRA's code, which produced
# the paper's tables, and PEFT's default.
INITS = ("gaussian", "kaiming_uniform")
RENAMED_INITS = {"paper": "gaussian", "loralib": "kaiming_uniform"}  # names before 2026-12: configs refuse them,
# adapter files written with them load under the new name (lora.state)


class LoRAError(ValueError):
    """Bad input to the LoRA library: the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adaptation of some weight types of a transformer.

    ``r`` and ``alpha`` are one number for every target or a mapping per weight type (the paper's
    r_q, r_v). With a mapping for ``r`` and no ``targets``, the targets are the mapping's keys.
    Each update is scaled by alpha/r (alpha/sqrt(r) with ``rslora=True``, Kalajdzievski 2023).

    >>> LoRAConfig(r={"q": 1, "v": 1}, alpha=8).targets
    ('q', 'v')
    >>> LoRAConfig(r=4, alpha=8).scale("v")
    2.0
    >>> LoRAConfig(r=16, alpha=8, rslora=True).scale("q")
    2.0
    >>> LoRAConfig(targets=("q", "gate"))
    Traceback (most recent call last):
    ...
    lora.config.LoRAError: unknown weight type 'gate' in targets; choose from q, k, v, o, mlp_in, mlp_out, embed
    """

    r: int | Mapping[str, int] = 8
    alpha: float | Mapping[str, float] = 8
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None  # None: the keys of ``r`` if a mapping, else ("q", "v")
    bias: str = "none"  # none | all | lora_only, as loralib's mark_only_lora_as_trainable
    init: str = "kaiming_uniform"  # INITS: kaiming_uniform, loralib's (the paper's code); gaussian, A ~ N(0, 1/r^2)
    layers: tuple[int, ...] | None = None  # transformer blocks to adapt; None = all
    rslora: bool = False
    train_head: bool = True  # the task head (classifier, score, BERT's pooler) is trained alongside, as in the paper

    def __post_init__(self):
        targets = self.targets
        if targets is None:
            targets = tuple(self.r) if isinstance(self.r, Mapping) else ("q", "v")
        if isinstance(targets, str):
            targets = (targets,)
        targets = tuple(dict.fromkeys(targets))
        object.__setattr__(self, "targets", targets)
        if self.layers is not None:
            layers = _block_indices(self.layers)  # before sorting: 1.7 must not become block 1
            object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        for name in ("r", "alpha"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, dict(value))
        self._validate()

    def _validate(self):
        if not self.targets:
            raise LoRAError("targets is empty; name at least one weight type, e.g. targets=('q', 'v')")
        for t in self.targets:
            if not isinstance(t, str) or t not in WEIGHT_TYPES:
                raise LoRAError(f"unknown weight type {t!r} in targets; choose from {', '.join(WEIGHT_TYPES)}")
        for name in ("r", "alpha"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                missing = [t for t in self.targets if t not in value]
                extra = [t for t in value if t not in self.targets]
                if missing or extra:
                    raise LoRAError(
                        f"{name} per weight type must cover exactly the targets {list(self.targets)}; "
                        f"missing {missing}, not targeted {extra}"
                    )
        for t in self.targets:
            r = self.rank(t)
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise LoRAError(f"rank for {t!r} must be a positive integer, got {r!r}")
            a = self.alpha_of(t)
            if not _is_number(a) or not math.isfinite(a) or a <= 0:  # nan or inf: every update NaN at step 1
                raise LoRAError(f"alpha for {t!r} must be a positive number (finite), got {a!r}")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise LoRAError(f"dropout must be in [0, 1) (a number), got {self.dropout!r}")
        for name in ("rslora", "train_head"):  # "no" or 0 would otherwise be read as true or false silently
            if not isinstance(getattr(self, name), bool):
                raise LoRAError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.bias not in BIAS_MODES:
            raise LoRAError(f"bias must be one of {', '.join(BIAS_MODES)}, got {self.bias!r}")
        if self.init in RENAMED_INITS:
            new = RENAMED_INITS[self.init]
            raise LoRAError(f"init={self.init} is now called init={new}; choose from {', '.join(INITS)}")
        if self.init not in INITS:
            raise LoRAError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")

    def rank(self, weight_type: str) -> int:
        return self.r[weight_type] if isinstance(self.r, Mapping) else self.r

    def alpha_of(self, weight_type: str) -> float:
        return self.alpha[weight_type] if isinstance(self.alpha, Mapping) else self.alpha

    def scale(self, weight_type: str) -> float:
        """The factor in W0 + scale * B A: alpha/r, or alpha/sqrt(r) for rsLoRA."""
        r = self.rank(weight_type)
        return self.alpha_of(weight_type) / (math.sqrt(r) if self.rslora else r)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["targets"] = list(self.targets)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoRAConfig:
        """The inverse of `to_dict`; unknown keys are an error, not silently dropped.

        >>> LoRAConfig.from_dict(LoRAConfig(r=4).to_dict()) == LoRAConfig(r=4)
        True
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LoRAError(f"unknown LoRA config keys {unknown}; known keys are {sorted(known)}")
        d = dict(d)
        for key in ("targets", "layers"):
            value = d.get(key)
            if value is not None:  # a single value from the command line (targets=q, layers=3) is one item
                d[key] = (value,) if isinstance(value, str | int) else tuple(value)
        return cls(**d)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _block_indices(layers) -> tuple[int, ...]:
    """Block indices as given (one integer, or a sequence of them): integers from 0, at least one (None, not an
    empty list, adapts every block).

    >>> _block_indices(3), _block_indices([2, 0])
    ((3,), (2, 0))
    >>> _block_indices((1.7,))
    Traceback (most recent call last):
    ...
    lora.config.LoRAError: layers are block indices (integers from 0; null: every block), got (1.7,)
    """
    is_index = lambda i: isinstance(i, int) and not isinstance(i, bool) and i >= 0  # noqa: E731
    items = (layers,) if is_index(layers) else tuple(layers) if isinstance(layers, tuple | list | range) else None
    if not items or not all(map(is_index, items)):
        raise LoRAError(f"layers are block indices (integers from 0; null: every block), got {layers!r}")
    return items
