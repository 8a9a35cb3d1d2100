"""Shared benchmark plumbing: round-robin timing in one process, memory probes, result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lora.files import unused_path, write_text

# The JSON files the README cites; LORA_BENCH_RESULTS sends a run elsewhere (the smoke tests do).
RESULTS = Path(os.environ.get("LORA_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


# Options several benchmarks share: (type, help). Each benchmark names the ones it takes, with its default.
_OPTIONS = {
    "batch": (int, "rows of a batch"),
    "seq": (int, "tokens of a row"),
    "r": (int, "LoRA rank"),
    "warmup": (int, "untimed rounds first"),
    "rounds": (int, "timed rounds"),
    "model": (str, "the model: conf/model/NAME.yaml (the smoke tests give a tiny one)"),
}


def parser(doc: str, **defaults) -> argparse.ArgumentParser:
    """A benchmark's command line: --device and --threads always, and the shared options named in `defaults`
    (e.g. ``rounds=10``) with those defaults; a benchmark adds its own options to what this returns."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the machines here have 2 cores)")
    add_out(p)
    for name, default in defaults.items():
        kind, help = _OPTIONS[name]
        p.add_argument(f"--{name}", type=kind, default=default, help=help)
    return p


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the command line and set torch's threads as asked."""
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    use_out(args)
    return args


def add_out(p: argparse.ArgumentParser):
    help = "folder for the result JSON (default: benchmarks/results, or $LORA_BENCH_RESULTS); NAME.json there is "
    p.add_argument("--out", type=Path, default=None, help=help + "never overwritten: NAME-2.json, ... instead")


def use_out(args: argparse.Namespace):
    """Send this run's result JSON to `--out` when given."""
    global RESULTS
    if getattr(args, "out", None) is not None:
        RESULTS = Path(args.out)


def timed_command(command: list[str], cwd: Path) -> float:
    """Wall seconds of `command` in its own process, measured from outside; a failure stops the benchmark with
    the command and the end of its stderr."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def round_robin(steps: dict[str, Callable[[], None]], warmup: int, rounds: int, device: str) -> dict[str, list[float]]:
    """Time each step function `rounds` times, interleaved, so a noisy neighbour slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + rounds):
        for name, step in steps.items():
            sync(device)
            t = time.perf_counter()
            step()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


class SavedTensors:
    """Bytes autograd keeps for the backward pass (unique storages): activation memory, exactly."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def _pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start, or since the last `reset_peak_rss`."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def reset_peak_rss() -> bool:
    """Linux resets the peak (VmHWM) when "5" is written to clear_refs; loading a model peaks higher
    than a training step, so without this the step's own peak would be hidden."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def save_json(name: str, payload: dict) -> Path:
    """RESULTS/NAME.json, or NAME-2.json, ... when it exists: a committed result is never overwritten (set
    LORA_BENCH_RESULTS to write elsewhere)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = unused_path(RESULTS / f"{name}.json")
    write_text(json.dumps(payload, indent=2) + "\n", path)
    return path
