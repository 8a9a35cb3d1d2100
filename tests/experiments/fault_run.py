"""Run a tiny training and SIGKILL it at one chosen moment: the fault injector of test_faults.py.

    python tests/experiments/fault_run.py EVENT N RUN_DIR [override ...]

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

import os
import shutil
import signal
import sys
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


def main():
    event, n, run_dir, *overrides = sys.argv[1:]
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


if __name__ == "__main__":
    main()
