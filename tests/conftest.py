import copy
import ctypes
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (addopts' -n) each worker is one process of several sharing the cores: one thread each, so
# the workers do not oversubscribe the CPU; alone, up to 2.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
torch.set_num_threads(1 if XDIST_WORKER else max(1, min(2, os.cpu_count() or 1)))


# glibc hands every freed block over 32 MB (its largest dynamic mmap threshold) straight back to the kernel, so
# each new large tensor costs fresh zeroed pages: GPT-2's logits over 50,257 tokens for a batch of beams are 50 MB
# a step, and those page faults were half of test_beam's CPU time (system time). Blocks up to 1 GB stay in the heap
# for reuse instead: here (mallopt) and in every process the tests start (the environment, which glibc reads at a
# process's start; xdist's workers too). Results are the same: torch aligns its buffers itself.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": (-3, 1 << 30), "MALLOC_TRIM_THRESHOLD_": (-1, 1 << 30)}  # mallopt's M_*


def _keep_large_blocks_in_the_heap():
    if any(name in os.environ for name in MALLOC_TUNING):
        return  # set before this process started (by the user, or our xdist controller): glibc has them already
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): that allocator keeps its own ways
        return
    for name, (option, value) in MALLOC_TUNING.items():
        os.environ[name] = str(value)
        mallopt(option, value)


_keep_large_blocks_in_the_heap()

from experiments.models import build  # noqa: E402

# (model config, head) for one tiny model of every family the paper uses.
FAMILIES = {
    "bert": ("tiny_bert", "seq_cls"),
    "roberta": ("tiny_roberta", "seq_cls"),
    "deberta-v2": ("tiny_deberta", "seq_cls"),
    "gpt2": ("tiny_gpt2", "causal_lm"),
    "llama": ("tiny_llama", "causal_lm"),
}


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    name, head = FAMILIES[family]
    torch.manual_seed(seed)
    return build(name, head=head).eval()


def batch(seed: int = 0, n: int = 3, length: int = 10) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 120, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0  # some padding, so masks matter
    return {"input_ids": ids, "attention_mask": mask}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def randomize_lora(model, seed: int = 1, std: float = 0.2):
    """Give every LoRA matrix non-zero values, so Delta W != 0."""
    import lora

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora.lora_layers(model):
            for p in (*layer.lora_A.values(), *layer.lora_B.values()):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(params=list(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture
def pair(family):
    """(base model, an identical copy) of one family."""
    base = tiny(family)
    return base, copy.deepcopy(base)


# --- a small fixture of tiny finished runs, built once per session for the analysis tests ---

# tiny_bert widened to 128 so that r=64 is a proper low-rank update (the stock width is 32).
TINY_RUN = ["model=tiny_bert", "model.arch.hidden_size=128", "task=sst2", "trainer.max_steps=2",
            "trainer.train_limit=16", "trainer.eval_limit=16", "trainer.batch_size=8", "trainer.eval_every=2",
            "trainer.threads=1"]  # fmt: skip
TINY_RUNS = {
    "section7/r8-s0": ["method=lora", "method.r=8", "trainer.seed=0"],
    "section7/r64-s0": ["method=lora", "method.r=64", "trainer.seed=0"],
    "section7/r64-s1": ["method=lora", "method.r=64", "trainer.seed=1"],
    "methods/bitfit-s0": ["method=bitfit", "trainer.seed=0"],
}


def make_runs(root, runs=None) -> dict:
    """Train each run of `runs` (name -> overrides) into root/name with experiments.train.run."""
    from omegaconf import OmegaConf

    from experiments.cli import compose, hydra_context
    from experiments.train import run

    out = {}
    with hydra_context():
        for name, overrides in (runs or TINY_RUNS).items():
            cfg = compose([*TINY_RUN, *overrides, f"trainer.output_dir={root / name}"])
            out[name] = run(OmegaConf.to_container(cfg, resolve=True))
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """The runs folder: section7/{r8-s0,r64-s0,r64-s1} (LoRA on q,v) and methods/bitfit-s0."""
    root = tmp_path_factory.mktemp("runs")
    make_runs(root)
    return root


# --- pytest-xdist (addopts' -n 2 --dist loadfile): each file's tests run on one worker, so a module fixture that
# trains, launches or starts something runs once. The workers take the files in collection order
# (--no-loadscope-reorder); the longest files (measured) come first, so that none starts last and leaves the
# other worker idle at the end.
# Order by CPU seconds per file (user+sys with children, -n0, one thread, on the loaded 2-core machine; suite2's
# report): test_distributed 630, test_faults 259, test_slurm (251 worker-s before, not re-measured), test_beam 164,
# test_runner 119, test_benchmarks ~160 before its smoke tests moved to a tiny Llama, test_hf_trainer (~35, its HF
# Trainer run and two of ours), test_nlg 100, test_metrics 71, test_notebooks 64, test_runs_reader 39.
LONGEST_FIRST = ("test_distributed", "test_faults", "test_slurm", "test_beam", "test_runner", "test_benchmarks",
                 "test_hf_trainer", "test_nlg", "test_metrics", "test_notebooks", "test_runs_reader")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))  # stable within a rank
