"""Run a tiny training and SIGKILL it at one chosen moment: the fault injector of test_faults.py.

    python tests/experiments/fault_run.py EVENT N RUN_DIR [override ...]
    forked([EVENT, N, RUN_DIR, override, ...], timeout)   # the same, without the imports (test_faults.py)

EVENT N picks the moment, counted in this process:
  step N      right after the N-th optimizer step
  torn N      in the N-th file write, after its temporary file is cut to half its size (a torn write)
  rename N    after the N-th temporary file is complete, before it is renamed into place
  renamed N   right after the N-th rename (the file is in place, nothing after it has run)
  rmtree N    in the N-th removal of an old checkpoint, after its first file is gone
  none 0      no fault: the run goes to the end
  launcher 0  no fault, but a SIGUSR2 handler is installed first, as submitit's job runner does: it
              writes RUN_DIR.handed-over and exits with status 3 (as submitit exits after requeueing)

Nothing here changes the code under test: the moments are found by wrapping the functions it calls.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(event: str, n: int):
    import torch

    counts = {"step": 0, "torn": 0, "rename": 0, "renamed": 0, "rmtree": 0}

    def hit(kind: str) -> bool:
        counts[kind] += 1
        return kind == event and counts[kind] == n

    step = torch.optim.AdamW.step

    def counted_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        if hit("step"):
            die()
        return out

    torch.optim.AdamW.step = counted_step

    fsync = os.fsync

    def torn_fsync(fd):
        if hit("torn"):
            path = os.readlink(f"/proc/self/fd/{fd}")
            os.truncate(path, os.path.getsize(path) // 2)
            die()
        return fsync(fd)

    os.fsync = torn_fsync

    replace = os.replace

    def counted_replace(src, dst, *args, **kwargs):
        if hit("rename"):
            die()
        out = replace(src, dst, *args, **kwargs)
        if hit("renamed"):
            die()
        return out

    os.replace = counted_replace

    rmtree = shutil.rmtree

    def counted_rmtree(path, *args, **kwargs):
        if Path(path).parent.name == "checkpoints" and hit("rmtree"):
            first = next(p for p in sorted(Path(path).iterdir()) if p.is_file())
            first.unlink()
            die()
        return rmtree(path, *args, **kwargs)

    shutil.rmtree = counted_rmtree


def main(argv: list[str] | None = None):
    event, n, run_dir, *overrides = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from omegaconf import OmegaConf

    from experiments.cli import compose
    from experiments.train import run

    cfg = OmegaConf.to_container(compose([f"trainer.output_dir={run_dir}", *overrides]), resolve=True)
    if event == "launcher":

        def requeue(signum, frame):
            Path(f"{run_dir}.handed-over").write_text(str(signum))
            os._exit(3)

        signal.signal(signal.SIGUSR2, requeue)
    elif event != "none":
        arm(event, int(n))
    run(cfg)


# What a fresh `python fault_run.py` spends ~10 s of CPU importing (torch, transformers' BERT, scipy, the trainer).
PRELOAD = ["experiments.cli", "experiments.train", "transformers.models.bert.modeling_bert", "scipy.stats"]


class Forked:
    """`python fault_run.py ARGV` as a Popen-like child forked from multiprocessing's fork server, which imported
    PRELOAD once: each child starts with the imports done, single-threaded (the server never ran torch), with
    its own state; a SIGKILL of itself reads -9, as from a subprocess. Its output goes to files, read at the end."""

    def __init__(self, argv: list[str]):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        self.argv, self._folder = argv, tempfile.TemporaryDirectory()
        self._out, self._err = Path(self._folder.name, "out"), Path(self._folder.name, "err")
        self.process = context.Process(target=_child, args=(argv, str(self._out), str(self._err)))
        self.process.start()

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, signum: int):
        os.kill(self.process.pid, signum)

    def communicate(self, timeout: float) -> tuple[str, str]:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise subprocess.TimeoutExpired(["fault_run.py", *self.argv], timeout)
        self.returncode = self.process.exitcode
        out, err = _text(self._out), _text(self._err)
        self._folder.cleanup()
        return out, err


def forked(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`python fault_run.py ARGV` to its end (see Forked), returned as subprocess.run returns it."""
    child = Forked(argv)
    out, err = child.communicate(timeout)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)


def _child(argv: list[str], out: str, err: str):
    for fd, path in ((1, out), (2, err)):  # the files stand in for the pipes of a subprocess
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    main(argv)
    sys.stdout.flush()
    sys.stderr.flush()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


if __name__ == "__main__":
    main()
