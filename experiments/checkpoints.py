"""Checkpoints of a running training: every process's part (trained tensors, optimizer and schedule, RNG,
the position in the data) written into the run folder's checkpoint files, and read back on resume, so that
an interrupted and resumed run ends with the same weights as an uninterrupted one. The files themselves
(names, checksums, what counts as complete) are `experiments.runs.RunFolder`'s."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .engines import Engine
from .runs import RunError, RunFolder


def save(folder: RunFolder, engine: Engine, state: dict):
    """Every process takes part (partitioned states are written by their owners); the main one writes ours."""
    path = folder.checkpoint_path(state["step"])
    if engine.is_main:
        folder.clear_checkpoint(path)  # a half-written one of a killed run
    engine.barrier()
    trainable = engine.trainable_state()
    saved = {**engine.save_state(path), "rng": engine.gather(_rng_state())}
    if engine.is_main:
        folder.save_checkpoint(state["step"], trainable, saved, state)
    engine.barrier()


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore(checkpoint: Path, engine: Engine) -> dict:
    tensors, saved, state = RunFolder.load_checkpoint(checkpoint)
    rngs = saved["rng"]  # one per process; a changed engine is refused earlier, with the config
    if len(rngs) != engine.world:
        raise RunError(f"{checkpoint} was written by {len(rngs)} process(es), this run has {engine.world}; "
                       "resume with as many, or start a new trainer.output_dir")  # fmt: skip
    engine.load_state(checkpoint, tensors, saved)
    rng = rngs[engine.rank]
    torch.set_rng_state(rng["torch"])
    random.setstate(_tuples(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list | tuple) else x
