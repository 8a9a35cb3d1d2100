"""Tasks by name. A task knows its files, its examples and its metric; nothing else."""

from __future__ import annotations

from .base import Example, TaskError
from .glue import SPECS as GLUE_TASKS
from .glue import GlueTask


def build_task(cfg: dict):
    """A task from its config (`conf/task/<name>.yaml`)."""
    name = cfg["name"]
    if name in GLUE_TASKS:
        return GlueTask(**cfg)
    raise TaskError(f"unknown task {name!r}; known: {', '.join(GLUE_TASKS)}")


__all__ = ["GLUE_TASKS", "Example", "GlueTask", "TaskError", "build_task"]
