"""Accuracy of generated label words: MNLI-matched posed to a decoder as generation (the paper's Tables 4 and 16).

A decoder writes its answer as text; `experiments.tasks.prompt_data.label_from_text` turns it into a label word,
or None when it is no label at all. None is counted wrong, never dropped: dropping it would score a model that
rambles on only the answers it happened to get into shape.
"""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predicted_labels: Sequence[str | None], gold: Sequence[str]) -> float:
    """The fraction of examples whose predicted label equals the gold one (None is wrong).

    >>> accuracy(["entailment", None, "neutral", "neutral"], ["entailment", "neutral", "neutral", "contradiction"])
    0.5
    """
    if len(predicted_labels) != len(gold):
        raise ValueError(f"{len(predicted_labels)} predicted labels but {len(gold)} gold labels")
    if not gold:
        raise ValueError("no labels to score")
    return sum(p is not None and p == g for p, g in zip(predicted_labels, gold, strict=True)) / len(gold)
