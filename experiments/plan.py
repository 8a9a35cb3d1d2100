"""Run several configs one after another in the same processes: under torchrun, one start-up of torch (and
DeepSpeed) for many small runs, all sharing one process group.

    python -m experiments.plan PLAN.json
    torchrun --standalone --nproc_per_node 2 -m experiments.plan PLAN.json

PLAN.json is a list of [output_dir, [override, ...]]; each run goes through `experiments.train.run` as
`run.py` calls it. Errors stop the plan with one line as they would stop `run.py`: exit 1 for an unreadable
plan, overrides that do not compose or values out of range, 2 for an error of a running run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(plan_file: str) -> int:
    plan = read(plan_file)  # a file that is no plan says so at once, before torch loads (seconds)
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from .cli import USER_ERRORS, check_config, compose, hydra_context
    from .engines import leave_process_group
    from .train import run

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        with hydra_context():
            for output_dir, overrides in plan:
                check_config([f"trainer.output_dir={output_dir}", *overrides])  # exits with one line
                cfg = OmegaConf.to_container(compose([f"trainer.output_dir={output_dir}", *overrides]), resolve=True)
                run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        leave_process_group()
    return 0


def read(plan_file: str) -> list:
    """The plan's runs, or exit with one line saying what is wrong with the file."""
    try:
        plan = json.loads(Path(plan_file).read_text())
    except (OSError, ValueError) as err:
        sys.exit(f"error: cannot read the plan {plan_file}: {err}")
    if not isinstance(plan, list) or not all(map(_is_run, plan)):
        sys.exit(f"error: {plan_file} must hold a JSON list of [output_dir, [override, ...]]")
    return plan


def _is_run(entry) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(sys.argv) != 2:
        sys.exit("usage: python -m experiments.plan PLAN.json")
    sys.exit(main(sys.argv[1]))
