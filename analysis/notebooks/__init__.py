"""Notebooks (jupytext percent-format .py files) that rebuild the tables and figures from run folders.

    python -m analysis.notebooks RUNS_DIR [--out DIR]   # execute each one; DIR gets <name>.ipynb + figures

DIR (default RUNS_DIR/analysis) is never written over: when it holds files, DIR-2, DIR-3, ... is used.

Each notebook reads $LORA_RUNS_DIR (the runs folder) and writes into $LORA_ANALYSIS_OUT; open the .py files
in Jupyter with jupytext, or run them as plain scripts with those variables set.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def notebooks() -> list[Path]:
    """The notebook sources: every .py file here but the package's own."""
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "conftest.py")


def fresh_folder(path: Path) -> Path:
    """`path`, or path-2, path-3, ... when it already holds files: the outputs of one execution together,
    never over an earlier one's."""
    from lora.files import unused_path

    path = Path(path)
    return unused_path(path) if path.exists() and any(path.iterdir()) else path
