"""Execute every notebook on a runs folder: `python -m analysis.notebooks RUNS_DIR [--out DIR]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import fresh_folder, notebooks

ROOT = Path(__file__).resolve().parents[2]


def execute(source: Path, runs_dir: Path, out: Path, timeout: int = 900) -> Path:
    """Run one jupytext notebook in a fresh kernel (cwd: the repository) and save it, outputs included."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = {"LORA_RUNS_DIR": str(runs_dir.resolve()), "LORA_ANALYSIS_OUT": str(out.resolve()), "MPLBACKEND": "Agg"}
    os.environ.update(env)  # the kernel inherits this process's environment
    # The kernel's own log (not the notebook's output) says it listens on local TCP unencrypted, on every
    # run: noise for a batch run on one machine, so only its errors are shown.
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}},
                   extra_arguments=["--IPKernelApp.log_level=ERROR"]).execute()  # fmt: skip
    target = out / f"{source.stem}.ipynb"
    nbformat.write(nb, target)
    return target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs_dir", type=Path)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where notebooks and figures go (default RUNS_DIR/analysis; DIR-2, ... if it holds files)",
    )
    p.add_argument("--only", default=None, help="run only the notebook of this name (e.g. tables)")
    args = p.parse_args(argv)
    from analysis.tables import TablesError, collect

    try:
        collect(args.runs_dir)  # one clear line for an empty or missing folder, before any kernel starts
    except TablesError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    chosen = [n for n in notebooks() if args.only in (None, n.stem)]
    if not chosen:
        sys.stderr.write(f"error: no notebook {args.only!r}; there are {', '.join(n.stem for n in notebooks())}\n")
        sys.exit(2)
    beside = args.runs_dir.parent if args.runs_dir.is_file() else args.runs_dir  # RUNS_DIR may be a runs.csv
    out = fresh_folder(args.out or beside / "analysis")
    out.mkdir(parents=True, exist_ok=True)
    from nbclient.exceptions import CellExecutionError

    for source in chosen:
        try:
            print(f"executed {execute(source, args.runs_dir, out)}")
        except CellExecutionError as err:
            first = next((line for line in str(err).splitlines() if "Error" in line), str(err).splitlines()[0])
            sys.stderr.write(f"error: notebook {source.name} failed: {first.strip()}\n")
            sys.exit(1)
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
