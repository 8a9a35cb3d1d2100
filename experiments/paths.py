"""Where things live outside the repository, each overridable by an environment variable."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
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


def kept_path(kind: str, key: Iterable[str], sources: Iterable[str | Path]) -> Path:
    """Where text derived from inputs is kept: <cache>/<kind>/<sha256>.txt, the digest over every `key` string and
    the bytes of every `sources` file (the code that derives it), so a change in any of them derives it again."""
    digest = hashlib.sha256()
    for part in key:
        digest.update(part.encode("utf-8") + b"\0")
    for source in sources:
        digest.update(Path(source).read_bytes())
    return cache_dir() / kind / f"{digest.hexdigest()}.txt"


def kept_text(path: Path, make: Callable[[], str]) -> str:
    """The text kept at `path` (`kept_path`), or `make()`'s, then kept there: written whole and renamed, so a process
    reading at the same time never sees half; a read-only cache folder only means it is not kept."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # not kept yet, or unreadable: derive it again
        text = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False) as tmp:
            tmp.write(text)
        os.replace(tmp.name, path)
    except OSError:
        pass
    return text
