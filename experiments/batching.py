"""Length-aware batching: which examples run together in one forward, in training and in evaluation.

A random batch of 32 SST-2 sentences holds three padded tokens for every real one, and every padded token
costs a frozen model's forward and backward. With `trainer.length_batching` (the default), each optimizer
step's examples, the same ones as without it, are sorted by length and cut into micro-batches of at most
`trainer.micro_batch_tokens` padded tokens (examples x the longest one); the trainer weights each micro-batch's
loss by its share of the step's units, so the update is the one of the whole batch up to float rounding.
Evaluation sorts a split by length the same way under `trainer.eval_batch_tokens`; outputs go back to the
split's order before they are scored.

Written by hand: HF Trainer's `group_by_length` changes which examples share a step (it sorts across
mega-batches of 50 steps), which changes the training itself; here a step keeps its examples, only their
grouping into forwards changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def token_length(task, tokenizer, special) -> Callable[[object], int]:
    """One example's length in tokens, as the task batches it (prefix tokens and truncation included)."""

    def length(item) -> int:
        return int(task.batch(tokenizer, [item], special)["input_ids"].shape[-1])

    return length


def by_length(lengths: Sequence[int], budget: int, max_items: int | None = None) -> list[list[int]]:
    """Positions 0..n-1 sorted by length (stable: equal lengths keep their order), cut into runs whose padded
    size (items x longest) stays within `budget` tokens, and at most `max_items` items each; an example longer
    than the budget goes alone.

    >>> by_length([5, 30, 6, 29, 7], budget=60)
    [[0, 2, 4], [3, 1]]
    >>> by_length([5, 30, 6, 29, 7], budget=60, max_items=2)
    [[0, 2], [4, 3], [1]]
    >>> by_length([100, 3], budget=10)
    [[1], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        fits = group is not None and (len(group) + 1) * lengths[i] <= budget  # sorted: i is the longest
        if fits and (max_items is None or len(group) < max_items):
            group.append(i)
        else:
            groups.append([i])
    return groups


def split_to(groups: list[list[int]], lengths: Sequence[int], count: int) -> list[list[int]]:
    """`groups` split further, the largest padded group in halves each time, until there are `count` (every
    process of a step must run as many forwards: a collective waits for each). Needs `count` <= items.

    >>> split_to([[0, 1, 2, 3], [4]], [1, 1, 1, 1, 9], 3)
    [[0, 1], [2, 3], [4]]
    """
    groups = [list(g) for g in groups]
    while len(groups) < count:
        cost = [len(g) * max(lengths[i] for i in g) if len(g) > 1 else -1 for g in groups]
        k = max(range(len(groups)), key=cost.__getitem__)
        half = len(groups[k]) // 2
        groups[k : k + 1] = [groups[k][:half], groups[k][half:]]
    return groups


def step_groups(lengths: Sequence[int], budget: int, gather: Callable[[object], list] | None = None) -> list[list[int]]:
    """This process's micro-batches of one optimizer step (positions into its examples). Under several
    processes `gather` brings every process's count of groups and of examples together, and each splits to
    the largest count any needs (capped by the fewest examples any holds)."""
    groups = by_length(lengths, budget)
    if gather is None:
        return groups
    counts = gather((len(groups), len(lengths)))
    count = min(max(g for g, _ in counts), min(n for _, n in counts))
    if count < len(groups):  # a process with fewer examples than another needs groups: merge from the longest
        while len(groups) > count:
            groups[-2:] = [groups[-2] + groups[-1]]
        return groups
    return split_to(groups, lengths, count)


def restore_order(groups: list[list[int]], outputs: list[list]) -> list:
    """Per-item outputs of `groups` (one list per group) back in the order of the positions.

    >>> restore_order([[2, 0], [1]], [["c", "a"], ["b"]])
    ['a', 'b', 'c']
    """
    placed = [None] * sum(map(len, groups))
    for group, out in zip(groups, outputs, strict=True):
        for i, o in zip(group, out, strict=True):
            placed[i] = o
    return placed
