"""Command-line plumbing: compose the config once up front so a mistake is one clear line."""

from __future__ import annotations

import sys

from baselines import MethodError
from baselines import check as check_method
from lora import LoRAError

from .config import register, validate
from .engines import EngineError
from .metrics import JavaMissing, ScoreInputError
from .models import ModelError, check_loadable
from .paths import CONF_DIR
from .runs import RunError, check_output_dir
from .tasks import TaskError, build_task

# A user's mistake, or the machine's (a full disk, a folder without write permission: OSError names the path
# and the cause): one line each, never a traceback.
USER_ERRORS = (LoRAError, MethodError, ModelError, RunError, TaskError, JavaMissing, ScoreInputError, EngineError,
               OSError)  # fmt: skip


def compose(overrides: list[str]):
    """The composed config (unresolved) for these command-line overrides, as `run.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    register()
    if GlobalHydra.instance().is_initialized():  # inside `hydra_context()`: reuse it (many compositions)
        return hydra_compose(config_name="config", overrides=overrides)
    with hydra_context():
        return hydra_compose(config_name="config", overrides=overrides)


def hydra_context():
    """Hydra initialised on conf/; compose many configs inside one `with hydra_context():`."""
    from hydra import initialize_config_dir

    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")


def check_config(argv: list[str], training: bool = True):
    """Exit with one line if the overrides do not compose or (`training`) hold a value training would refuse;
    multirun sweeps are left to Hydra and each job's own checks."""
    register()
    if any(a in ("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info") or a.startswith("--") for a in argv):
        return
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(compose(argv), resolve=True, throw_on_missing=True)
    except Exception as err:  # Hydra and OmegaConf raise many types; all are the user's input here
        sys.exit(f"error: {one_line(err)}")
    if not training:
        return
    try:
        check_values(cfg)
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")


def check_values(cfg: dict):
    """All that can be checked before anything loads or any folder is made (Hydra makes the run folder
    before the job starts): the trainer's ranges, the task's options and decoding settings, whether the
    method applies to the model, whether the model has weights."""
    validate(cfg["trainer"])
    check_output_dir(cfg["trainer"]["output_dir"])
    build_task(cfg["task"])
    check_method(cfg["method"]["name"], cfg["model"]["arch"]["model_type"])
    check_loadable(cfg["model"])


def one_line(err: Exception) -> str:
    """Hydra's messages span lines and hide the reason in their cause; fold both into one line."""
    parts = [str(err)]
    if err.__cause__ is not None and str(err.__cause__) not in parts[0]:
        parts.append(str(err.__cause__))
    kept = []
    for line in (line.strip() for part in parts for line in part.splitlines()):
        if line.startswith(("Config search path", "provider=")):
            break  # Hydra's search path: noise for a user
        if line and not line.startswith(("full_key", "object_type", "reference_type")):
            kept.append(line)
    return " ".join(kept)
