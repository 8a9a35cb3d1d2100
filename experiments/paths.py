"""Where things live outside the repository, each overridable by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


def shared_dir() -> Path:
    """The team's shared folder (data, notes, tools): $LORA_SHARED_DIR, default ../shared beside the repo."""
    return Path(os.environ.get("LORA_SHARED_DIR", ROOT.parent / "shared"))


def data_dir() -> Path:
    """Released data sets (GLUE, E2E, WebNLG, DART): $LORA_DATA_DIR, default <shared>/data."""
    return Path(os.environ.get("LORA_DATA_DIR", shared_dir() / "data"))


def cache_dir() -> Path:
    """Derived files worth keeping between runs (dequantized models): $LORA_CACHE_DIR."""
    return Path(os.environ.get("LORA_CACHE_DIR", Path.home() / ".cache" / "lora-repro"))
