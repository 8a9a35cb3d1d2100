"""Length-aware batching (experiments/batching.py): which examples share a forward.

That a length-batched run ends with the weights of an unbatched one, under every engine, and resumes to the
same bits is tested where the engines are (test_distributed.py, test_runner.py's resume test); here are the
grouping rules themselves, and what they buy on real SST-2 sentences.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.batching import by_length, packed_runs, split_to, step_groups
from experiments.paths import data_dir

lengths_st = st.lists(st.integers(1, 300), min_size=1, max_size=64)


def cost(groups, lengths, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 2000), overhead=st.integers(0, 200))
def test_groups_cover_every_example_once_sorted_and_within_the_budget(lengths, budget, overhead):
    groups = by_length(lengths, budget, overhead)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [lengths[i] for g in groups for i in g] == sorted(lengths)  # sorted by length, group after group
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget
    one = [sorted(range(len(lengths)), key=lambda i: lengths[i])]  # one forward, if the budget allows it
    if len(lengths) * max(lengths) <= budget:
        assert cost(groups, lengths, overhead) <= cost(one, lengths, overhead)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 2000))
def test_packed_runs_cover_every_example_once_sorted_within_the_budget_and_fewest(lengths, budget):
    runs = packed_runs(lengths, budget)
    assert [i for r in runs for i in r] == sorted(range(len(lengths)), key=lambda i: lengths[i])
    assert all(len(r) == 1 or sum(lengths[i] for i in r) <= budget for r in runs)
    for a, b in itertools.pairwise(runs):  # cut only where the next example would not fit
        assert sum(lengths[i] for i in a) + lengths[b[0]] > budget


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=9), budget=st.integers(1, 400),
       overhead=st.integers(0, 80))  # fmt: skip
def test_groups_cost_the_least_of_every_cut_of_the_sorted_examples(lengths, budget, overhead):
    """Against every way of cutting the sorted examples into runs (2^(n-1) of them) that keeps the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = math.inf
    for cuts in itertools.product((False, True), repeat=len(order) - 1):
        runs, run = [], [order[0]]
        for i, cut in zip(order[1:], cuts, strict=True):
            if cut:
                runs.append(run)
                run = []
            run.append(i)
        runs.append(run)
        if all(len(r) == 1 or len(r) * lengths[r[-1]] <= budget for r in runs):
            best = min(best, cost(runs, lengths, overhead))
    assert cost(by_length(lengths, budget, overhead), lengths, overhead) == best


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 2000), extra=st.integers(0, 10))
def test_split_to_reaches_the_count_and_keeps_the_examples(lengths, budget, extra):
    groups = by_length(lengths, budget, 48)
    count = min(len(groups) + extra, len(lengths))
    split = split_to(groups, lengths, count)
    assert len(split) == count and all(split)
    assert [i for g in split for i in g] == [i for g in groups for i in g]  # the same order, only cut further


@pytest.mark.parametrize("sizes", [(16, 16), (16, 15), (3, 1)])
def test_every_process_runs_as_many_forwards(sizes):
    """Two processes (threads; a barrier as engine.gather) with different lengths, and one with fewer examples
    than the other needs groups: both end with as many micro-batches, each holding all its own examples."""
    rng = random.Random(sum(sizes))
    lengths = [[rng.randint(5, 120) for _ in range(n)] for n in sizes]
    parts, barrier, out = [None, None], threading.Barrier(2), [None, None]

    def process(rank):
        def gather(obj):
            parts[rank] = obj
            barrier.wait()
            got = list(parts)
            barrier.wait()
            return got

        out[rank] = step_groups(lengths[rank], 128, 0, gather)

    threads = [threading.Thread(target=process, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out[0]) == len(out[1]) == min(max(len(by_length(x, 128, 0)) for x in lengths), min(sizes))
    for rank in (0, 1):
        assert sorted(i for g in out[rank] for i in g) == list(range(sizes[rank]))


def test_the_switch_off_keeps_the_epochs_micro_batches_and_on_groups_the_same_examples():
    from experiments.train import _micro_batches

    task = SimpleNamespace(batch=lambda tok, items, special: list(items), max_length=9)  # a "batch": its items
    words = ["a" * n for n in (9, 1, 8, 2, 7, 3, 6, 4)]
    t = {"length_batching": False, "micro_batch_tokens": 12, "forward_cost_tokens": 4, "batch_size": 8,
         "packing": False}  # fmt: skip
    r = SimpleNamespace(cfg={"trainer": t}, task=task,
                        tokenizer=None, special=None, train_set=words, engine=SimpleNamespace(world=1),
                        train_lengths={}, length=len)  # fmt: skip
    chunks = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert _micro_batches(r, chunks) == [[words[j] for j in c] for c in chunks]
    r.cfg["trainer"]["length_batching"] = True
    grouped = _micro_batches(r, chunks)
    # at most 12 padded tokens each, 4 more a forward: 9 + 12 + 7 + 8 + 9 + 5 x 4 = 65 (one each: 60 + 32 = 92)
    assert [[len(w) for w in g] for g in grouped] == [[1, 2, 3], [4, 6], [7], [8], [9]]
    # null: at most batch_size x max_length = 72 tokens; at 40 a forward, one of all 8 (72 + 40) is the cheapest
    t["micro_batch_tokens"], t["forward_cost_tokens"] = None, 40
    assert [[len(w) for w in g] for g in _micro_batches(r, chunks)] == [[1, 2, 3, 4, 6, 7, 8, 9]]
    assert r.train_lengths == {j: len(words[j]) for j in range(8)}  # measured once, kept for later epochs


def test_sorting_real_sst2_batches_cuts_the_padding():
    """Random global batches of 32 SST-2 training sentences (MiniLM's tokenizer): about three padded tokens per
    real one in one forward; sorted into micro-batches at the default forward cost, under 1.5 in at most 4."""
    if not (data_dir() / "glue" / "SST-2" / "train.tsv").exists():
        pytest.skip(f"no GLUE SST-2 under {data_dir()}: set LORA_SHARED_DIR")
    from experiments.batching import token_length
    from experiments.cli import compose
    from experiments.config import TrainerConfig
    from experiments.models import check_loadable, load_tokenizer
    from experiments.tasks import build_task

    cfg = compose([])
    model = dict(cfg.model)
    try:
        check_loadable(model)
    except Exception as err:  # noqa: BLE001 the offline MiniLM package is missing
        pytest.skip(f"MiniLM-L6 is not installed: {err}")
    task, tokenizer = build_task(dict(cfg.task)), load_tokenizer(model)
    train, rng = task.examples("train"), random.Random(0)
    length = token_length(task, tokenizer, None)
    padded, real, forwards = {"one forward": 0, "sorted": 0}, 0, []
    for _ in range(20):
        lengths = [length(train[rng.randrange(len(train))]) for _ in range(32)]
        real += sum(lengths)
        padded["one forward"] += 32 * max(lengths)
        groups = by_length(lengths, 32 * task.max_length, TrainerConfig.forward_cost_tokens)
        padded["sorted"] += sum(len(g) * max(lengths[i] for i in g) for g in groups)
        forwards.append(len(groups))
    assert padded["one forward"] / real > 2.5
    assert padded["sorted"] / real < 1.5 and sum(forwards) / len(forwards) <= 4
