"""What every task shares: the interface the trainer calls, an example, and the error for bad task input.

A task turns its files into examples and knows how to batch them, what the loss is and how to score a
model on them; the trainer knows nothing of the task beyond these:

    task.head                 "seq_cls" (GLUE) or "causal_lm" (NLG): which head the model is built with
    task.num_labels           classes of a seq_cls head (1 for a regression task)
    task.preflight()          refuses at once what would only fail later (NLG: no Java for METEOR)
    task.examples(split)      the training or evaluation items of a split
    task.batch(tok, items, special)   tensors of one batch (special: prefix methods' token ids, or None)
    task.loss(outputs, batch, label_smoothing)   the mean over the batch's units ...
    task.units(batch)         ... how many: examples, or completion tokens (the trainer weights by them)
    task.predict(model, tok, items, device, special) -> [output of each item of one batch]
    task.metrics(outputs, items) -> {metric: value}   (the trainer spreads the batches over its processes)
    task.metric, task.greater_is_better, task.eval_splits   which evaluation selects the best step
    task.final(model, tok, folder, device, special) -> {name: value}   the last word on the finished model
                              (NLG decodes the test set; GLUE has nothing to add)
"""

from __future__ import annotations

from dataclasses import dataclass


class TaskError(ValueError):
    """Missing or malformed task data; the message names the file and what to do."""


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None
    label: int | float
