"""Length-aware batching: which examples run together in one forward, in training and in evaluation.

A random batch of 32 SST-2 sentences holds three padded tokens for every real one, and every padded token
costs a frozen model's forward and backward. With `trainer.length_batching` (the default), each optimizer
step's examples, the same ones as without it, are sorted by length and cut into micro-batches where that costs
less: padded tokens (examples x the longest one) plus `trainer.forward_cost_tokens` per forward, at most
`trainer.micro_batch_tokens` padded tokens each (by default the most an unsorted micro-batch could hold, so memory
never grows). The trainer weights each micro-batch's loss by its share of the step's units, so the update is the
one of the whole batch up to float rounding. Evaluation sorts a split by length the same way under
`trainer.eval_batch_tokens`; outputs go back to the split's order before they are scored.

Written by hand: HF Trainer's `group_by_length` changes which examples share a step (it sorts across
mega-batches of 50 steps), which changes the training itself; here a step keeps its examples, only their
grouping into forwards changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def token_length(task, tokenizer, special) -> Callable[[object], int]:
    """One example's length in tokens, as the task batches it (prefix tokens and truncation included)."""

    def length(item) -> int:
        return int(task.batch(tokenizer, [item], special)["input_ids"].shape[-1])

    return length


def micro_batch_budget(trainer: dict, max_length: int, world: int = 1) -> int:
    """The most padded tokens of one training forward: `trainer.micro_batch_tokens`, or by default the most an
    unsorted micro-batch of this process could hold (its share of the batch x `max_length`), so memory never grows.

    >>> micro_batch_budget({"micro_batch_tokens": None, "batch_size": 32}, 128, world=2)
    2048
    """
    return trainer["micro_batch_tokens"] or trainer["batch_size"] // world * max_length


def by_length(lengths: Sequence[int], budget: int, overhead: int) -> list[list[int]]:
    """Positions 0..n-1 sorted by length (stable), cut into consecutive runs at the least cost: each run costs its
    padded tokens (items x longest) plus `overhead`, a forward's fixed cost in tokens, and holds at most `budget`
    padded tokens (an example longer than that goes alone). Dynamic programming over the cut points, O(n x
    the longest run): short and long examples apart, without a forward for every few tokens saved.

    >>> by_length([5, 30, 6, 29, 7], budget=100, overhead=10)  # 3 x 7 + 2 x 30 + 2 x 10 = 101 tokens
    [[0, 2, 4], [3, 1]]
    >>> by_length([5, 30, 6, 29, 7], budget=150, overhead=100)  # one forward (250) is cheaper than two (281) ...
    [[0, 2, 4, 3, 1]]
    >>> by_length([5, 30, 6, 29, 7], budget=100, overhead=100)  # ... where the budget allows it
    [[0, 2, 4], [3, 1]]
    >>> by_length([100, 3], budget=10, overhead=0)
    [[1], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    best, cut = [0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):  # best[end]: the cheapest runs of the first `end` sorted examples
        for start in range(end - 1, -1, -1):
            padded = (end - start) * sizes[end - 1]
            if padded > budget and end - start > 1:
                break  # longer runs only hold more
            if best[start] + padded + overhead < best[end]:
                best[end], cut[end] = best[start] + padded + overhead, start
    runs, end = [], len(order)
    while end:
        runs.append(order[cut[end] : end])
        end = cut[end]
    return runs[::-1]


def packed_runs(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Positions 0..n-1 sorted by length (stable), cut into consecutive runs of at most `budget` tokens (an
    example longer than that goes alone): a packed forward (experiments/packing.py) costs its real tokens, so
    the fewer forwards the better.

    >>> packed_runs([5, 30, 6, 29, 7], budget=50)
    [[0, 2, 4, 3], [1]]
    >>> packed_runs([5, 30, 6, 29, 7], budget=100)
    [[0, 2, 4, 3, 1]]
    """
    runs, used = [[]], 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if runs[-1] and used + lengths[i] > budget:
            runs.append([])
            used = 0
        runs[-1].append(i)
        used += lengths[i]
    return runs if runs[0] else []


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


def step_groups(
    lengths: Sequence[int],
    budget: int,
    overhead: int,
    gather: Callable[[object], list] | None = None,
    packed: bool = False,
) -> list[list[int]]:
    """This process's micro-batches of one optimizer step (positions into its examples): `by_length`, or
    `packed_runs` for packed forwards. Under several processes `gather` brings every process's count of groups
    and of examples together, and each splits to the largest count any needs (capped by the fewest examples any
    holds)."""
    groups = packed_runs(lengths, budget) if packed else by_length(lengths, budget, overhead)
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
