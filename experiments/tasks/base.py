"""What every task shares: an example, and the error for bad task input."""

from __future__ import annotations

from dataclasses import dataclass


class TaskError(ValueError):
    """Missing or malformed task data; the message names the file and what to do."""


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: int | float
