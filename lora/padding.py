"""Stacking token rows of different lengths into one batch: the one padding rule of the project."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad(rows: Sequence[Sequence[int] | torch.Tensor], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of rows padded with `value` on the left (a decoder continues from its last real
    token, so prompts must end together) or on the right (classifiers).

    >>> ids, mask = pad([[5, 6], [7]], value=0, left=True)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span], mask[i, span] = torch.as_tensor(r, dtype=torch.long), 1
    return ids, mask
