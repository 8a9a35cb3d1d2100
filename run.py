"""Run one experiment: `python run.py model=gpt2_medium method=lora task=e2e [key=value ...]`.

`python run.py` alone runs the offline default (MiniLM-L6 + LoRA + SST-2). `-m` sweeps, e.g.
`python run.py -m method.r=4,8,16`. Every run writes one folder (see experiments/runs.py).
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is opt-in: HF_HUB_OFFLINE=0 python run.py ...
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from experiments.cli import USER_ERRORS, check_config, recipe, with_recipe  # noqa: E402
from experiments.config import register  # noqa: E402

register()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from experiments.train import run

    sweep = HydraConfig.get().mode == RunMode.MULTIRUN  # a sweep run again skips the jobs it finished
    try:
        return run(OmegaConf.to_container(cfg, resolve=True), skip_finished=sweep)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # between training steps Ctrl-C checkpoints first (experiments/preemption.py)
        print("error: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    note = recipe(sys.argv[1:])[1]
    if note:  # the run's first line: which recipe this command trains with
        print(note, file=sys.stderr)
    sys.argv[1:] = with_recipe(sys.argv[1:])  # Hydra composes from sys.argv, as compose() does
    check_config(sys.argv[1:])  # one clear line for a bad key or option, before Hydra starts
    main()
