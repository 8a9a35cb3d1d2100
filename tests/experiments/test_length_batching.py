"""Length-aware batching (experiments/batching.py): which examples share a forward.

That a length-batched run ends with the weights of an unbatched one, under every engine, and resumes to the
same bits is tested where the engines are (test_distributed.py, test_runner.py's resume test); here are the
grouping rules themselves, and what they buy on real SST-2 sentences.
"""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.batching import by_length, split_to, step_groups
from experiments.paths import data_dir

lengths_st = st.lists(st.integers(1, 300), min_size=1, max_size=64)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 2000))
def test_groups_cover_every_example_once_sorted_and_within_the_budget(lengths, budget):
    groups = by_length(lengths, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths)  # sorted by length, group after group
    for g in groups:
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget
    for g, nxt in zip(groups, groups[1:], strict=False):  # greedy: the next example would not have fitted
        assert (len(g) + 1) * lengths[nxt[0]] > budget


@settings(max_examples=100, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 2000), extra=st.integers(0, 10))
def test_split_to_reaches_the_count_and_keeps_the_examples(lengths, budget, extra):
    groups = by_length(lengths, budget)
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

        out[rank] = step_groups(lengths[rank], 128, gather)

    threads = [threading.Thread(target=process, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out[0]) == len(out[1]) == min(max(len(by_length(x, 128)) for x in lengths), min(sizes))
    for rank in (0, 1):
        assert sorted(i for g in out[rank] for i in g) == list(range(sizes[rank]))


def test_the_switch_off_keeps_the_epochs_micro_batches_and_on_groups_the_same_examples():
    from experiments.train import _micro_batches

    task = SimpleNamespace(batch=lambda tok, items, special: list(items))  # a "batch" is its items
    words = ["a" * n for n in (9, 1, 8, 2, 7, 3, 6, 4)]
    r = SimpleNamespace(cfg={"trainer": {"length_batching": False, "micro_batch_tokens": 12}}, task=task,
                        tokenizer=None, special=None, train_set=words, engine=SimpleNamespace(world=1),
                        train_lengths={}, length=len)  # fmt: skip
    chunks = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert _micro_batches(r, chunks) == [[words[j] for j in c] for c in chunks]
    r.cfg["trainer"]["length_batching"] = True
    grouped = _micro_batches(r, chunks)
    assert [[len(w) for w in g] for g in grouped] == [[1, 2, 3], [4, 6], [7], [8], [9]]  # at most 12 tokens each
    assert r.train_lengths == {j: len(words[j]) for j in range(8)}  # measured once, kept for later epochs


def test_sorting_real_sst2_batches_cuts_the_padding():
    """Random global batches of 32 SST-2 training sentences (MiniLM's tokenizer): about three padded tokens per
    real one in one forward; sorted into micro-batches of at most 256 tokens, under 1.5."""
    if not (data_dir() / "glue" / "SST-2" / "train.tsv").exists():
        pytest.skip(f"no GLUE SST-2 under {data_dir()}: set LORA_SHARED_DIR")
    from experiments.batching import token_length
    from experiments.cli import compose
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
    padded = {"one forward": 0, "sorted": 0}
    real = 0
    for _ in range(20):
        lengths = [length(train[rng.randrange(len(train))]) for _ in range(32)]
        real += sum(lengths)
        padded["one forward"] += 32 * max(lengths)
        padded["sorted"] += sum(len(g) * max(lengths[i] for i in g) for g in by_length(lengths, 256))
    assert padded["one forward"] / real > 2.5
    assert padded["sorted"] / real < 1.5
