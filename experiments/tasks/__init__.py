"""Tasks by name. A task knows its files, its examples, its loss and its metrics; nothing else (`Task`)."""

from __future__ import annotations

import copy
import inspect
import typing

from baselines.prefix import DECODERS

from .base import Example, Task, TaskError, read_data, recording_reads, type_mismatch
from .glue import SPECS as GLUE_TASKS
from .glue import GlueTask
from .nlg import SPECS as NLG_TASKS
from .nlg import NLGTask
from .prompt import SPECS as PROMPT_TASKS
from .prompt import PromptTask


def build_task(cfg: dict) -> Task:
    """A task from its config (`conf/task/<name>.yaml`); an option the task does not have is refused, as
    `LoRAConfig` refuses one, so that a misspelt setting never silently keeps its default."""
    name = cfg.get("name")
    classes = {**dict.fromkeys(GLUE_TASKS, GlueTask), **dict.fromkeys(NLG_TASKS, NLGTask),
               **dict.fromkeys(PROMPT_TASKS, PromptTask)}  # fmt: skip
    if name not in classes:
        raise TaskError(f"unknown task {name!r}; known: {', '.join(classes)}")
    cls = classes[name]
    known = list(inspect.signature(cls).parameters)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise TaskError(f"task {name} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    types = typing.get_type_hints(cls.__init__)  # `hub: maybe` would be true, `data_dir: 3` a traceback
    for key, value in cfg.items():
        if expected := type_mismatch(value, types[key]):
            raise TaskError(f"task.{key} must be {expected}, got {value!r}")
    return cls(**cfg)


def check_run(task: Task, model_type: str, eval_limit: int | None = None):
    """Refuse a model that cannot do the task, before anything loads: a generation task needs a decoder-only
    language model (an encoder would train, then fail to decode); a classification task a model transformers
    can put a classifier on. And an evaluation cut shorter than the task's metric needs (a correlation: 2).

    >>> check_run(build_task({"name": "e2e"}), "bert")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    experiments.tasks.base.TaskError: task e2e generates text, which needs a decoder-only language model ...
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as CLASSIFIERS

    if task.head == "causal_lm" and model_type not in DECODERS:
        raise TaskError(f"task {task.name} generates text, which needs a decoder-only language model "
                        f"({', '.join(DECODERS)}); model type {model_type!r} is not one: pick another model, or a "
                        "classification task")  # fmt: skip
    if task.head == "seq_cls" and model_type not in CLASSIFIERS:
        raise TaskError(f"task {task.name} is classification, and transformers has no classifier for model type "
                        f"{model_type!r}: pick another model, or a generation task")  # fmt: skip
    least = getattr(task, "min_eval_examples", 1)
    if eval_limit is not None and eval_limit < least:
        raise TaskError(f"task {task.name} scores {task.metric}, which needs at least {least} evaluated examples; "
                        f"trainer.eval_limit={eval_limit} is too few")  # fmt: skip


def fitted(task: Task, positions: int) -> Task:
    """A copy of `task` whose sequences fit a model of `positions` positions (the task is left as it is).

    >>> short = fitted(build_task({"name": "rte"}), 64)
    >>> short.max_length, build_task({"name": "rte"}).max_length
    (64, 128)
    """
    task = copy.copy(task)
    task.max_length = min(task.max_length, positions)
    return task


__all__ = ["GLUE_TASKS", "NLG_TASKS", "PROMPT_TASKS", "Example", "GlueTask", "NLGTask", "PromptTask", "Task",
           "TaskError", "build_task", "check_run", "fitted", "read_data", "recording_reads"]  # fmt: skip
