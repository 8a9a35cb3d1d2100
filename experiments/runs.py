"""A run folder: the only output of a run, and what analysis reads. This module is its one writer
(`RunFolder`) and its one reader (`find_runs`, `read_config`, `read_metrics`, `load_trained`); no other
module spells out its file names.

    config.yaml        the composed config
    metrics.json       final and best metrics, every evaluation, parameter counts, time, memory, versions,
                       the data read (each file's path under the data folder, size, SHA-256: `data_fingerprint`)
    adapter.safetensors (+ .json)   only the trained parameters, as training ended
    adapter-best.safetensors (+ .json)   the same at the best evaluation (the one metrics.json's "best" reports)
    log.txt            the log
    scalars.csv        every optimizer step's train/loss and lr, and every evaluation's scores: step,tag,value
    tensorboard/       the same as TensorBoard event files, when tensorboardX is installed
    predictions/       what the task's last word wrote (NLG: the decoded test set and its references)
    decodes/NAME/      later decodes of the finished model (`python -m experiments.decode`)
    checkpoints/step-N/   the latest complete checkpoint (COMPLETE, with the files' SHA-256, is written last);
                       its state.json holds the data's fingerprint, which a resume checks (`check_data`)
    damaged-checkpoints/  checkpoints that failed their checksums, set aside (never resumed from, never deleted)

Nothing is overwritten: a folder that holds a finished run, or a run of another config, is refused.
Every file is written to a temporary name, fsynced and renamed into place (`lora.files.atomic_path`), so a
run killed at any moment leaves files that are either whole or absent; a checkpoint counts only when
its COMPLETE marker is present and every file matches the checksum recorded there.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from lora import LoRAError
from lora.files import TMP_SUFFIX, atomic_path, is_temporary, read_safetensors, write_safetensors, write_text
from lora.io import ADAPTER_FILE
from lora.state import load_tensors

from .models import adapter_model, load_tokenizer, model_conf, prepared_model
from .paths import ROOT
from .tasks import Task, build_task

log = logging.getLogger(__name__)
CONFIG_FILE, METRICS_FILE, LOG_FILE = "config.yaml", "metrics.json", "log.txt"
BEST_ADAPTER_FILE = "adapter-best.safetensors"  # the trained parameters of the best evaluation
PREDICTIONS_DIR, DECODES_DIR, CHECKPOINTS_DIR = "predictions", "decodes", "checkpoints"
SCALARS_FILE, TENSORBOARD_DIR = "scalars.csv", "tensorboard"
DAMAGED_DIR = "damaged-checkpoints"
CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", "state.json")

# May change between a run and its resume; so may where the run folder is (moved to other storage) and where
# its data is: the data's files are checked (`RunFolder.check_data`).
IGNORED_KEYS = ("trainer.resume", "trainer.stop_after", "logger.", "trainer.output_dir", "task.data_dir")


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
        self.notes: list[str] = []  # what `open` found and did, for the run's log
        self.damaged: list[str] = []  # the checkpoints it set aside

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_FILE

    @property
    def best_adapter(self) -> Path:
        return self.path / BEST_ADAPTER_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_DIR

    def open(self, config: dict, resume: str) -> Path | None:
        """Claim the folder for `config` and lock it while this process writes to it; returns the checkpoint to
        resume from, if any. Damaged checkpoints are set aside first (`notes` says which)."""
        if resume not in ("auto", "never"):
            raise RunError(f"trainer.resume must be auto or never, got {resume!r}")
        check_output_dir(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._identity = _identity(self.path)
            self._lock()
        except OSError as err:
            raise RunError(f"cannot use {self.path} as the run folder ({err.strerror}); choose another") from None
        try:
            return self._claim(config, resume)
        except BaseException:
            self.close()
            raise

    def finished(self, config: dict) -> dict | None:
        """The metrics of the finished run of `config` this folder holds (the config equal but for the keys a
        resume may change), else None: a sweep run again skips such a job. A finished run of another config is
        `open`'s to refuse."""
        if not (self.path / METRICS_FILE).is_file() or not (self.path / CONFIG_FILE).is_file():
            return None
        metrics = read_metrics(self.path)
        if metrics.get("status") != "complete" or config_diff(read_config(self.path), config):
            return None
        return metrics

    def _claim(self, config: dict, resume: str) -> Path | None:
        metrics = self.path / METRICS_FILE
        saved = self.path / CONFIG_FILE
        if metrics.exists() and read_metrics(self.path).get("status") == "complete":
            differ = config_diff(read_config(self.path), config) if saved.exists() else []
            other = f" of another config (differs in {', '.join(differ)})" if differ else ""  # why a sweep ran it
            raise RunError(f"{self.path} already holds a finished run{other}; choose a new trainer.output_dir")
        if any(not is_temporary(p) for p in self.path.iterdir()) and not saved.exists():
            raise RunError(f"{self.path} already holds other files; choose a new (or empty) trainer.output_dir")
        self.damaged = self.set_aside_damaged()
        self.notes += self.damaged
        checkpoint = self.latest_checkpoint()
        if saved.exists():
            differ = config_diff(read_config(self.path), config)
            if differ and (checkpoint is not None or metrics.exists()):
                raise RunError(
                    f"{self.path} holds a run of another config (differs in {', '.join(differ)}); "
                    "choose a new trainer.output_dir"
                )
            if differ:  # a start that failed before its first checkpoint: nothing of it to keep
                self.notes.append(f"the run started here before never reached a checkpoint; its config gives way "
                                  f"to this one (differs in {', '.join(differ)})")  # fmt: skip
        if checkpoint is not None and resume == "never":
            raise RunError(f"{self.path} holds a checkpoint and trainer.resume=never; choose a new trainer.output_dir")
        self.sweep_temporaries()
        write_text(yaml.safe_dump(config, sort_keys=False), saved)
        return checkpoint

    def _lock(self):
        """An exclusive lock on the folder itself (no lock file is left behind), held until `close`: a second
        run started into the same folder is refused instead of writing over the first one's files."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunError(
                f"another run is writing to {self.path} now; wait for it to end or choose another trainer.output_dir"
            ) from None
        except OSError as err:  # NFS (flock emulated, needs a file open for writing), Lustre without -o flock
            os.close(fd)
            self.notes.append(f"{self.path} cannot be locked on this file system ({err.strerror}): start only one "
                              "run into it at a time")  # fmt: skip
            return
        self._fd = fd

    def close(self):
        """Release the folder's lock (also released when the process ends, however it ends)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def set_aside_damaged(self) -> list[str]:
        """Move every checkpoint whose COMPLETE marker is there but whose files fail their checksums (changed
        after they were written) to damaged-checkpoints/, kept for a look and never resumed from or deleted;
        returns one line for each. A checkpoint without its marker is a write a kill interrupted: skipped."""
        said = []
        for folder in sorted(self.checkpoints.glob("step-*")):
            problem = verify(folder)
            if problem is None or not (folder / "COMPLETE").exists():
                continue
            aside = self.path / DAMAGED_DIR / folder.name
            while aside.exists():
                aside = aside.with_name(aside.name + "+")
            aside.parent.mkdir(exist_ok=True)
            folder.rename(aside)
            said.append(f"checkpoint {folder} is damaged ({problem}); kept as {aside}, not resumed from")
        return said

    def sweep_temporaries(self):
        """Remove the hidden temporary files a killed run left half-written (never a finished file)."""
        if self.path.exists():
            for tmp in filter(is_temporary, self.path.rglob(f".*{TMP_SUFFIX}")):
                tmp.unlink()

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint whose COMPLETE marker is there and whose files match its checksums."""
        for folder in sorted(self.checkpoints.glob("step-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True):
            problem = verify(folder)
            if problem is None:
                return folder
            log.info("skipping checkpoint %s: %s", folder, problem)
        return None

    def check_data(self, checkpoint: Path, data: dict) -> str | None:
        """Refuse to resume from `checkpoint` on other data than it was trained on: every file it read (its
        state.json's `data_fingerprint`) must be read again, of the same size and SHA-256, wherever the data
        folder is now. A checkpoint of older code records none: returns a note saying so."""
        saved = json.loads((checkpoint / "state.json").read_text()).get("data")
        if not isinstance(saved, dict) or not isinstance(saved.get("files"), dict):
            return f"{checkpoint} records no data fingerprint (older code): the data it was trained on is not checked"
        then, now = saved["files"], data["files"]
        for name in sorted(set(then) | set(now)):
            if then.get(name) == now.get(name):
                continue
            if name not in now:
                why = f"was read before (under {saved['root']}) and is not read now"
            elif name not in then:
                why = f"is read now and was not before (then under {saved['root']})"
            else:
                why = f"changed (size {then[name]['size']} -> {now[name]['size']} bytes, another SHA-256)"
            raise RunError(
                f"the data changed since {checkpoint.name}: {Path(data['root'] or '') / name} {why}; resume on the "
                "data the run began with (LORA_DATA_DIR, task.data_dir) or start a new trainer.output_dir"
            )
        return None

    def check_intact(self, *files: Path):
        """Refuse to go on with a run folder removed or replaced while the run writes it, or that lost a file the
        run wrote: a later write would make a new, empty folder, and a metrics.json there would claim files
        that are gone."""
        claimed = getattr(self, "_identity", None)  # set by `open`; a folder only read or tested has none
        if claimed is not None and _identity(self.path) != claimed:
            raise RunError(f"the run folder {self.path} was removed or replaced while the run wrote it; the run is "
                           "not done: start it again in a new trainer.output_dir")  # fmt: skip
        missing = [f.name for f in (self.path / CONFIG_FILE, *files) if not f.is_file()]
        if missing:
            raise RunError(f"{', '.join(missing)} vanished from {self.path} while the run wrote it; the run is not "
                           "done: start it again in a new trainer.output_dir")  # fmt: skip

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    def clear_checkpoint(self, folder: Path):
        """Remove what a killed run left of this checkpoint, before anything is written into it."""
        if folder.exists():
            shutil.rmtree(folder)

    def save_checkpoint(self, step: int, trainable: dict, optimizer: dict, state: dict):
        """Write our files into the checkpoint folder, then the marker with the checksums of every file in
        it (also those an engine wrote there first: DeepSpeed's partitions), then drop older checkpoints."""
        self.check_intact()
        folder = self.checkpoint_path(step)
        write_safetensors(
            {k: v.detach().cpu().contiguous() for k, v in trainable.items()}, {}, folder / "trainable.safetensors"
        )
        with atomic_path(folder / "optimizer.pt") as tmp:
            torch.save(optimizer, tmp)
        write_text(json.dumps(state), folder / "state.json")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not is_temporary(p))
        sums = {p.relative_to(folder).as_posix(): sha256(p) for p in files}
        write_text(json.dumps({"sha256": sums}), folder / "COMPLETE")  # last: a folder without it is never loaded
        for old in self.checkpoints.glob("step-*"):
            if old != folder:
                (old / "COMPLETE").unlink(missing_ok=True)  # first: a kill mid-delete leaves no "damaged" checkpoint
                shutil.rmtree(old)

    @staticmethod
    def load_checkpoint(folder: Path) -> tuple[dict, dict, dict]:
        tensors, _ = read_safetensors(folder / "trainable.safetensors")
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True)  # never unpickle arbitrary objects
        return tensors, optimizer, json.loads((folder / "state.json").read_text())

    def drop_checkpoints(self):
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def write_metrics(self, metrics: dict):
        write_text(json.dumps(metrics, indent=2) + "\n", self.path / METRICS_FILE)

    def scalars(self, step: int, wandb_run=None) -> ScalarLog:
        """The run's per-step scalars, continued from `step` (0, or the checkpoint resumed from)."""
        return ScalarLog(self.path, step, wandb_run)


class ScalarLog:
    """Per-step scalars to every sink at once: scalars.csv (always), TensorBoard (when tensorboardX is
    installed), wandb (when the run has one). The CSV is appended to, one flushed line per value, unlike
    the folder's other files (rewriting it every step would cost more than the step): a killed run leaves
    at most one cut line, and a resumed one first drops every line past its checkpoint (`read_scalars`
    skips a cut line). A write that fails (a full disk) is an OSError naming the file."""

    def __init__(self, folder: Path, step: int, wandb_run=None):
        file = folder / SCALARS_FILE
        kept = [r for r in read_scalars(folder) if r[0] <= step] if file.exists() else []
        with atomic_path(file) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("step", "tag", "value"), *kept])
        self._path = file
        self._file = open(file, "a", newline="")  # noqa: SIM115 -- open until close()
        self._csv, self._wandb = csv.writer(self._file), wandb_run
        self._tensorboard = _TensorBoard.create(folder / TENSORBOARD_DIR, step)

    def log(self, step: int, values: dict[str, float]):
        with _naming(self._path):
            for tag, value in values.items():
                self._csv.writerow((step, tag, repr(float(value))))
            self._file.flush()
        if self._tensorboard is not None:
            self._tensorboard.add(step, values)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self):
        """Close every file, also after a failed write (a second error would only hide the first): what
        cannot be written now is said in one warning."""
        closers = [(self._file.close, self._path)]
        if self._tensorboard is not None:
            closers.append((self._tensorboard.close, self._tensorboard.path))
        for close, path in closers:
            try:
                close()
            except OSError as err:
                log.warning("could not finish %s: %s", path, err.strerror or err)


@contextlib.contextmanager
def _naming(path: Path):
    """An OSError of a write that names no file (a full disk: `[Errno 28] No space left on device`) names `path`."""
    try:
        yield
    except OSError as err:
        if err.filename:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


class _TensorBoard:
    """The run's scalars as a TensorBoard event file, written in this thread. tensorboardX's SummaryWriter
    writes from a thread of its own and flushes again at exit, so a full disk there ends in tracebacks that no
    one can catch; here a failed write is an OSError of the caller, and `close` leaves nothing behind."""

    def __init__(self, folder: Path, step: int):
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.record_writer import RecordWriter
        from tensorboardX.summary import scalar

        self._event, self._scalar = Event, scalar
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}"
        self._writer = RecordWriter(str(self.path))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if step:  # TensorBoard hides the events at or past `step` of earlier files: those before a resume
            self._write(Event(step=step, session_log=SessionLog(status=SessionLog.START)))

    @classmethod
    def create(cls, folder: Path, step: int) -> _TensorBoard | None:
        """A writer continuing from `step`, or None when tensorboardX is not installed."""
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            return None
        return cls(folder, step)

    def _write(self, event):
        with _naming(self.path):
            self._writer.write(event.SerializeToString())

    def add(self, step: int, values: dict[str, float]):
        for tag, value in values.items():
            self._write(self._event(wall_time=time.time(), step=step, summary=self._scalar(tag, float(value))))

    def close(self):
        try:
            with _naming(self.path):
                self._writer.flush()
        finally:
            with contextlib.suppress(OSError):  # closed even when the flush failed: nothing left to flush at exit
                self._writer.close()


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, None when it is gone: a folder made again under the same name differs."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def data_fingerprint(reads: dict[Path, dict], root: str | Path | None) -> dict:
    """What a run read (`experiments.tasks.recording_reads`): each data file by its path under the task's
    data folder `root` (so the same files elsewhere are the same data; a file outside it by its absolute
    path), with its size and SHA-256."""

    def name(file: Path) -> str:
        with contextlib.suppress(ValueError, TypeError):
            return Path(file).relative_to(root).as_posix()
        return str(Path(file).absolute())

    return {"root": None if root is None else str(root), "files": {name(f): reads[f] for f in sorted(reads)}}


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


def check_output_dir(path: Path):
    """Refuse at once an output folder that cannot be one: a file, a name too long, a place not writable."""
    path = Path(path).absolute()
    too_long = [part for part in path.parts if len(part.encode()) > 255]  # before any look at the disk: it fails
    if too_long:
        raise RunError(f"a folder name in trainer.output_dir is {len(too_long[0].encode())} bytes; at most 255")
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a folder; choose another trainer.output_dir")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RunError(f"{existing} is a file, so {path} cannot be made; choose another trainer.output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"{existing} is not writable by this user; choose another trainer.output_dir")


# --- reading a run folder -----------------------------------------------------------------------------------


def find_runs(folder: str | Path) -> list[Path]:
    """Every run folder below `folder` (one with both config.yaml and metrics.json), sorted."""
    return sorted(p.parent for p in Path(folder).rglob(METRICS_FILE) if (p.parent / CONFIG_FILE).exists())


def read_scalars(run: Path) -> list[tuple[int, str, float]]:
    """A run's scalars.csv as (step, tag, value) rows in the order written; empty when there is none.

    A last line without its newline was cut short by a kill and is skipped (its value may be cut too)."""
    file = Path(run) / SCALARS_FILE
    if not file.is_file():
        return []
    text = file.read_text(encoding="utf-8")
    lines = text.splitlines()[1:] if text.endswith("\n") else text.splitlines()[1:-1]
    rows = []
    for line in csv.reader(lines):
        try:
            rows.append((int(line[0]), line[1], float(line[2])))
        except (IndexError, ValueError):
            continue
    return rows


def training_curve(run: Path, tag: str = "train/loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar of a run, e.g. train/loss, lr, dev/accuracy."""
    pairs = [(step, value) for step, t, value in read_scalars(run) if t == tag]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def read_config(run: Path) -> dict:
    """The composed config a run was started with, or a RunError saying the file is missing or damaged."""
    data = _read(Path(run) / CONFIG_FILE, yaml.safe_load, yaml.YAMLError)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise RunError(f"{Path(run) / CONFIG_FILE} is not a run's config (no model section); the file is damaged")
    return data


def read_metrics(run: Path) -> dict:
    """A run's metrics.json, or a RunError saying the file is missing or damaged."""
    data = _read(Path(run) / METRICS_FILE, json.loads, ValueError)
    if not isinstance(data, dict):
        raise RunError(f"{Path(run) / METRICS_FILE} is not a JSON object; the file is damaged")
    return data


def _read(file: Path, parse, errors: type[Exception] | tuple):
    if not file.is_file():
        raise RunError(f"no {file.name} in {file.parent}; give a run folder written by run.py")
    try:
        return parse(file.read_text(encoding="utf-8"))
    except (errors, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{file} cannot be read ({reason}); the file is damaged") from None


def check_trained(run: Path):
    """Refuse a folder that holds no finished training (its config and trained tensors are both needed)."""
    if not (Path(run) / CONFIG_FILE).is_file() or not (Path(run) / ADAPTER_FILE).is_file():
        raise RunError(f"{run} holds no trained run ({CONFIG_FILE} and {ADAPTER_FILE} are needed)")


@dataclass
class Trained:
    """A finished run's model rebuilt as training left it (any method), with its tokenizer, task and config."""

    model: nn.Module
    tokenizer: object
    task: Task
    config: dict


def load_trained(
    run: Path, base: str | None = None, task_overrides: dict | None = None, tokenizer: bool = True
) -> Trained:
    """Rebuild the model a run trained: its base model (or the model config `base`: the same architecture
    with other weights, e.g. real ones for a run on a random copy), the run's method applied as training
    applied it, and the trained tensors of adapter.safetensors loaded with every check (names, shapes).
    `task_overrides` change task settings such as decoding; `tokenizer=False` loads none (weights only)."""
    run = Path(run)
    check_trained(run)
    cfg = read_config(run)
    adapter = run / ADAPTER_FILE
    model_cfg = cfg["model"] if base in (None, cfg["model"]["name"]) else model_conf(base)
    task = build_task({**cfg["task"], **(task_overrides or {})})
    tok = load_tokenizer(model_cfg) if tokenizer else None
    seed = cfg["trainer"]["seed"]
    try:
        if cfg["trainer"].get("eval_adapter"):  # the evaluated adapter's own config, not the run's method section
            model = adapter_model(model_cfg, adapter, task, tok, seed)
        else:
            model = prepared_model(model_cfg, cfg["method"], task, tok, seed=seed)
            tensors, _ = read_safetensors(adapter)
            load_tensors(model, tensors, source=adapter, base_model=cfg["model"]["name"])
    except LoRAError as err:
        raise RunError(f"the run does not fit {model_cfg['name']}: {err}") from None
    return Trained(model, tok, task, cfg)


# --- what a run records about where it ran ---------------------------------------------------------------------


@functools.cache
def code_version() -> dict:
    """The code's commit and whether the tree had uncommitted changes, read once per process, when its first
    run starts. Python imports the code once, so every later run of a sweep in one process (Hydra's -m,
    experiments.plan) runs that code whatever the tree holds by then; read at each run's start (or its end),
    a commit or an edit made during a sweep would be named for code that never ran."""
    return {"git_commit": _git(["rev-parse", "HEAD"]) or "unknown",
            "git_dirty": bool(_git(["status", "--porcelain", "--untracked-files=no"]))}  # fmt: skip


def environment() -> dict:
    """Peak memory, package versions, the code's commit and dirty flag (`code_version`), the command line, the
    experiment preset and the SLURM job: metrics.json's provenance."""
    import accelerate
    import transformers

    return {
        "peak_memory_mb": _peak_memory_mb(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "accelerate": accelerate.__version__},
        **code_version(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "experiment": _experiment_preset(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside SLURM
    }  # fmt: skip


def _experiment_preset() -> str | None:
    """The `experiment=` preset Hydra composed this run with, if any (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _git(args: list[str]) -> str:
    """What `git ARGS` prints in the repository ("" where there is no git or no repository)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""
