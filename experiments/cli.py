"""Command-line plumbing: compose the config once up front so a mistake is one clear line."""

from __future__ import annotations

import sys

from baselines import MethodError
from lora import LoRAError

from .config import register
from .engines import EngineError
from .metrics import JavaMissing, ScoreInputError
from .models import ModelError
from .paths import CONF_DIR
from .runs import RunError
from .tasks import TaskError

USER_ERRORS = (LoRAError, MethodError, ModelError, RunError, TaskError, JavaMissing, ScoreInputError, EngineError)


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


def check_config(argv: list[str]):
    """Exit with one line if the overrides do not compose; multirun sweeps are left to Hydra."""
    register()
    if any(a in ("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info") or a.startswith("--") for a in argv):
        return
    from omegaconf import OmegaConf

    try:
        cfg = compose(argv)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as err:  # Hydra and OmegaConf raise many types; all are the user's input here
        sys.exit(f"error: {one_line(err)}")


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
