"""The tokens the default job's forwards compute: ours against Hugging Face Trainer's samplers, counted, not timed.

    python -m benchmarks.padding                      # the default job (`python run.py`), in seconds
    python -m benchmarks.padding task=mrpc            # any overrides run.py takes

A frozen model's forward and backward cost about the same for every token it computes, real or padded, plus a
fixed cost per forward. This counts both over the job's optimizer steps and its evaluations, for three ways to
batch the same examples: ours (`trainer.length_batching`: each random batch sorted and cut into micro-batches;
packed, `trainer.packing`: its sentences end to end in rows, one forward a step),
HF Trainer with its defaults (the random batch padded to its longest), and HF with `group_by_length` (its
`get_length_grouped_indices`: batches drawn from sorted mega-batches of 50, which changes which examples share a
step). "real" is the floor any batching that keeps each step's random examples must compute: only the training
itself can go lower, never the batching. Counts are exact for ours (the trainer's own order and cuts); HF's use
its sampler's functions on an order of the same seed, so they are the same statistic, not HF's very batches.
"""

from __future__ import annotations

import argparse
import sys

import torch
from omegaconf import OmegaConf
from transformers.trainer_pt_utils import get_length_grouped_indices

from benchmarks.common import add_out, machine, save_json, use_out
from experiments import batching, packing
from experiments.cli import compose
from experiments.models import load_tokenizer
from experiments.tasks import build_task
from experiments.train import batches, eval_groups


def counted(groups: list[list[int]], lengths: list[int], packed: bool = False, widen: bool = False) -> dict:
    """Forwards and tokens computed (each forward: its examples x its longest; `packed`, its rows x their width,
    experiments/packing.py, rows widened as in evaluation with `widen`) of these groups."""
    padded = 0
    for g in groups:
        if packed:
            rows, width = packing.layout([lengths[i] for i in g], widen)
            padded += len(rows) * width
        else:
            padded += len(g) * max(lengths[i] for i in g)
    return {"forwards": len(groups), "padded": padded}


def training(lengths: list[int], t: dict, steps: int, seed: int) -> dict[str, dict]:
    """The first `steps` optimizer steps of epoch 0, batched each way."""
    order = batches(len(lengths), t["batch_size"], seed, epoch=0)[:steps]
    used = [i for step in order for i in step]
    budget = batching.micro_batch_budget(t, t["max_length"])
    ours, packed = [], []
    for step in order:
        sizes = [lengths[i] for i in step]
        ours += [[step[k] for k in cut] for cut in batching.by_length(sizes, budget, t["forward_cost_tokens"])]
        packed += [[step[k] for k in cut] for cut in batching.packed_runs(sizes, budget)]
    grouped = get_length_grouped_indices(lengths, t["batch_size"], generator=torch.Generator().manual_seed(seed))
    size = t["batch_size"]
    return {
        "real": {"forwards": 0, "padded": sum(lengths[i] for i in used)},
        "ours": counted(ours, lengths),
        "ours_packed": counted(packed, lengths, packed=True),
        "hf": counted(order, lengths),
        "hf_best": counted([grouped[s : s + size] for s in range(0, steps * size, size)], lengths),
    }


def evaluation(lengths: list[int], t: dict, max_length: int) -> dict[str, dict]:
    """One evaluation of the split, batched each way (HF's best sorts it by length in batches of eval_batch_size)."""
    size, n = t["eval_batch_size"], len(lengths)
    in_order = [list(range(s, min(s + size, n))) for s in range(0, n, size)]
    ours, packed = (eval_groups({**t, "length_batching": True, "packing": p}, list(range(n)), lengths.__getitem__,
                                max_length) for p in (False, True))  # fmt: skip
    by_length = sorted(range(n), key=lambda i: -lengths[i])
    return {
        "real": {"forwards": 0, "padded": sum(lengths)},
        "ours": counted(ours, lengths),
        "ours_packed": counted(packed, lengths, packed=True, widen=True),
        "hf": counted(in_order, lengths),
        "hf_best": counted([by_length[s : s + size] for s in range(0, n, size)], lengths),
    }


def table(phase: str, counts: dict[str, dict]) -> list[str]:
    real = counts["real"]["padded"]
    rows = [f"| {phase}: {name} | {c['forwards']:,} | {c['padded']:,} | {c['padded'] / real:.3f} |"
            for name, c in counts.items()]  # fmt: skip
    return rows


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="run.py overrides (default: the default job)")
    add_out(p)
    args = p.parse_args(argv)
    use_out(args)
    cfg = OmegaConf.to_container(compose(args.overrides), resolve=True)
    t, task = cfg["trainer"], build_task(cfg["task"])
    tokenizer = load_tokenizer(cfg["model"])
    length = batching.token_length(task, tokenizer, None)
    train = [length(x) for x in task.examples("train")[: t["train_limit"]]]
    dev = [length(x) for x in task.examples(task.eval_splits[0])[: t["eval_limit"]]]
    steps = t["max_steps"] or len(train) // t["batch_size"]
    t = {**t, "max_length": task.max_length}
    result = {
        "machine": machine(),
        "command": "python -m benchmarks.padding " + " ".join(args.overrides),
        "steps": steps,
        "training": training(train, t, steps, t["seed"]),
        "evaluation": evaluation(dev, t, task.max_length),
    }
    print("| batching | forwards | tokens computed | per real token |\n|---|---:|---:|---:|")
    print("\n".join(table("training", result["training"]) + table("one evaluation", result["evaluation"])))
    tr = result["training"]
    result["most_batching_can_gain_over_hf_best"] = tr["hf_best"]["padded"] / tr["real"]["padded"]
    print(f"HF best computes {result['most_batching_can_gain_over_hf_best']:.3f} tokens in training for each real "
          "token: the most any batching that keeps the random batch could gain on it")  # fmt: skip
    save_json("padding", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
