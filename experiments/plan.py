"""Run several configs one after another in the same processes: under torchrun, one start-up of torch (and
DeepSpeed) for many small runs, all sharing one process group.

    python -m experiments.plan PLAN.json
    torchrun --standalone --nproc_per_node 2 -m experiments.plan PLAN.json

PLAN.json is a list of [output_dir, [override, ...]]; each run goes through `experiments.train.run` as
`run.py` calls it, and a run's error stops the plan (one line, exit 2), as it would stop `run.py`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(plan_file: str) -> int:
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from .cli import USER_ERRORS, compose, hydra_context
    from .train import run

    plan = json.loads(Path(plan_file).read_text())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if _cuda() else "gloo")
    try:
        with hydra_context():
            for output_dir, overrides in plan:
                cfg = OmegaConf.to_container(compose([f"trainer.output_dir={output_dir}", *overrides]), resolve=True)
                run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1]))
