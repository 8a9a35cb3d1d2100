"""Run several tiny trainings one after another in the processes torchrun started: the driver of
test_distributed.py (one launch per engine pays the start-up of torch and DeepSpeed once).

    torchrun --standalone --nproc_per_node 2 tests/experiments/distributed_runs.py PLAN.json

PLAN.json is a list of [output_dir, [override, ...]]; each run goes through `experiments.train.run`, as
`run.py` would call it. The process group is made here, once, so every run shares it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(plan_file: str):
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from experiments.cli import compose, hydra_context
    from experiments.train import run

    dist.init_process_group("gloo")
    with hydra_context():
        for output_dir, overrides in json.loads(Path(plan_file).read_text()):
            cfg = OmegaConf.to_container(compose([f"trainer.output_dir={output_dir}", *overrides]), resolve=True)
            run(cfg)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
