"""A small fixture of tiny finished runs, built once per session for the analysis tests (a few seconds)."""

from __future__ import annotations

import pytest

# tiny_bert widened to 128 so that r=64 is a proper low-rank update (the stock width is 32).
TINY = ["model=tiny_bert", "model.arch.hidden_size=128", "task=sst2", "trainer.max_steps=2", "trainer.train_limit=16",
        "trainer.eval_limit=16", "trainer.batch_size=8", "trainer.eval_every=2", "trainer.threads=1"]  # fmt: skip
RUNS = {
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
        for name, overrides in (runs or RUNS).items():
            cfg = compose([*TINY, *overrides, f"trainer.output_dir={root / name}"])
            out[name] = run(OmegaConf.to_container(cfg, resolve=True))
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """The runs folder: section7/{r8-s0,r64-s0,r64-s1} (LoRA on q,v) and methods/bitfit-s0."""
    root = tmp_path_factory.mktemp("runs")
    make_runs(root)
    return root
