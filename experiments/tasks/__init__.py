"""Tasks by name. A task knows its files, its examples, its loss and its metrics; nothing else (`Task`)."""

from __future__ import annotations

import copy
import inspect

from .base import Example, Task, TaskError, read_data, recording_reads
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
    return cls(**cfg)


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
           "TaskError", "build_task", "fitted", "read_data", "recording_reads"]  # fmt: skip
