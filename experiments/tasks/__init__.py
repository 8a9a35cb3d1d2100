"""Tasks by name. A task knows its files, its examples, its loss and its metrics; nothing else."""

from __future__ import annotations

from .base import Example, TaskError
from .glue import SPECS as GLUE_TASKS
from .glue import GlueTask
from .nlg import SPECS as NLG_TASKS
from .nlg import NLGTask


def build_task(cfg: dict):
    """A task from its config (`conf/task/<name>.yaml`)."""
    name = cfg["name"]
    if name in GLUE_TASKS:
        return GlueTask(**cfg)
    if name in NLG_TASKS:
        return NLGTask(**cfg)
    raise TaskError(f"unknown task {name!r}; known: {', '.join([*GLUE_TASKS, *NLG_TASKS])}")


__all__ = ["GLUE_TASKS", "NLG_TASKS", "Example", "GlueTask", "NLGTask", "TaskError", "build_task"]
