"""A run folder: the only output of a run, and what analysis reads.

    config.yaml        the composed config
    metrics.json       final and best metrics, every evaluation, parameter counts, time, memory, versions
    adapter.safetensors (+ .json)   only the trained parameters
    log.txt            the log
    checkpoints/step-N/   the latest complete checkpoint (COMPLETE, with the files' SHA-256, is written last)

Nothing is overwritten: a folder that holds a finished run, or a run of another config, is refused.
Every file is written to a temporary name, fsynced and renamed into place (`lora.io.atomic_path`), so a
run killed at any moment leaves files that are either whole or absent; a checkpoint counts only when
its COMPLETE marker is present and every file matches the checksum recorded there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
import yaml

from lora.io import TMP_SUFFIX, atomic_path, read_safetensors, write_safetensors, write_text

log = logging.getLogger(__name__)
CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", "state.json")

IGNORED_KEYS = ("trainer.resume", "trainer.stop_after", "logger.")  # may change between a run and its resume


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def open(self, config: dict, resume: str) -> Path | None:
        """Claim the folder for `config`; returns the checkpoint to resume from, if any."""
        if resume not in ("auto", "never"):
            raise RunError(f"trainer.resume must be auto or never, got {resume!r}")
        metrics = self.path / "metrics.json"
        if metrics.exists() and json.loads(metrics.read_text()).get("status") == "complete":
            raise RunError(f"{self.path} already holds a finished run; choose a new trainer.output_dir")
        saved = self.path / "config.yaml"
        if self.path.exists() and any(not _temporary(p) for p in self.path.iterdir()) and not saved.exists():
            raise RunError(f"{self.path} already holds other files; choose a new (or empty) trainer.output_dir")
        if saved.exists():
            differ = config_diff(yaml.safe_load(saved.read_text()), config)
            if differ:
                raise RunError(
                    f"{self.path} holds a run of another config (differs in {', '.join(differ)}); "
                    "choose a new trainer.output_dir"
                )
        checkpoint = self.latest_checkpoint()
        if checkpoint is not None and resume == "never":
            raise RunError(f"{self.path} holds a checkpoint and trainer.resume=never; choose a new trainer.output_dir")
        self.sweep_temporaries()
        write_text(yaml.safe_dump(config, sort_keys=False), saved)
        return checkpoint

    def sweep_temporaries(self):
        """Remove the hidden temporary files a killed run left half-written (never a finished file)."""
        if self.path.exists():
            for tmp in filter(_temporary, self.path.rglob(f".*{TMP_SUFFIX}")):
                tmp.unlink()

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint whose COMPLETE marker is there and whose files match its checksums."""
        for folder in sorted(self.checkpoints.glob("step-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True):
            problem = verify(folder)
            if problem is None:
                return folder
            log.warning("skipping checkpoint %s: %s", folder, problem)
        return None

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    def clear_checkpoint(self, folder: Path):
        """Remove what a killed run left of this checkpoint, before anything is written into it."""
        if folder.exists():
            shutil.rmtree(folder)

    def save_checkpoint(self, step: int, trainable: dict, optimizer: dict, state: dict):
        """Write our files into the checkpoint folder, then the marker with the checksums of every file in
        it (also those an engine wrote there first: DeepSpeed's partitions), then drop older checkpoints."""
        folder = self.checkpoint_path(step)
        write_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in trainable.items()}, {}, folder / "trainable.safetensors"
        )
        with atomic_path(folder / "optimizer.pt") as tmp:
            torch.save(optimizer, tmp)
        write_text(json.dumps(state), folder / "state.json")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not _temporary(p))
        sums = {p.relative_to(folder).as_posix(): sha256(p) for p in files}
        write_text(json.dumps({"sha256": sums}), folder / "COMPLETE")  # last: a folder without it is never loaded
        for old in self.checkpoints.glob("step-*"):
            if old != folder:
                shutil.rmtree(old)

    @staticmethod
    def load_checkpoint(folder: Path) -> tuple[dict, dict, dict]:
        tensors, _ = read_safetensors(folder / "trainable.safetensors")
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True)  # never unpickle arbitrary objects
        return tensors, optimizer, json.loads((folder / "state.json").read_text())

    def drop_checkpoints(self):
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def write_metrics(self, metrics: dict):
        write_text(json.dumps(metrics, indent=2) + "\n", self.path / "metrics.json")


def _temporary(path: Path) -> bool:
    """A hidden temporary of `lora.io.atomic_path` (a write that a kill interrupted)."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file()


def sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path) -> str | None:
    """None if the checkpoint folder is complete and intact, else what is wrong with it."""
    marker = folder / "COMPLETE"
    if not marker.exists():
        return "no COMPLETE marker (the run was stopped while writing it)"
    try:
        sums = json.loads(marker.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        return "its COMPLETE marker is not the JSON this code writes"
    if not isinstance(sums, dict):
        return "its COMPLETE marker is not the JSON this code writes"
    for name in dict.fromkeys([*CHECKPOINT_FILES, *sums]):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"its COMPLETE marker names a file outside the checkpoint ({name})"
        if not (folder / name).is_file():
            return f"{name} is missing"
        if sha256(folder / name) != sums.get(name):
            return f"{name} does not match its checksum (truncated or changed)"
    return None


def config_diff(old: dict, new: dict) -> list[str]:
    """Keys whose values differ between two configs, ignoring those a resume may change."""
    a, b = flatten(old), flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [k for k in keys if not any(k == i or (i.endswith(".") and k.startswith(i)) for i in IGNORED_KEYS)]
