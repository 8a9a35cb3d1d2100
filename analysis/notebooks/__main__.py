"""Execute every notebook on a runs folder: `python -m analysis.notebooks RUNS_DIR [--out DIR]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import fresh_folder, notebooks

ROOT = Path(__file__).resolve().parents[2]


def execute(source: Path, runs_dir: Path, out: Path, timeout: int = 900, aggregate: str = "paper") -> Path:
    """Run one jupytext notebook in a fresh kernel (cwd: the repository) and save it, outputs included, with
    a first cell that records where its runs and this repository are (`made_from`)."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target = out / f"{source.stem}.ipynb"
    nb.cells.insert(0, nbformat.v4.new_code_cell(made_from(target, runs_dir)))
    env = {"LORA_RUNS_DIR": str(runs_dir.resolve()), "LORA_ANALYSIS_OUT": str(out.resolve()), "MPLBACKEND": "Agg",
           "LORA_AGGREGATE": aggregate}  # fmt: skip
    # The kernel's own log (not the notebook's output) says it listens on local TCP unencrypted, on every
    # run: noise for a batch run on one machine, so only its errors are shown.
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}},
                   extra_arguments=["--IPKernelApp.log_level=ERROR"]).execute(env={**os.environ, **env})  # fmt: skip
    nbformat.write(nb, target)
    return target


def made_from(notebook: Path, runs_dir: Path) -> str:
    """The first cell of an executed notebook: the runs it was made from and the repository, each as an
    absolute path and relative to the notebook's folder. Re-run from that folder (`jupyter nbconvert --execute`
    starts the kernel there), the relative paths are used, so a moved checkout still works; from anywhere
    else, the absolute ones. $LORA_RUNS_DIR still wins."""
    here = notebook.resolve().parent
    runs, root = runs_dir.resolve(), ROOT.resolve()
    return f"""# Made by `python -m analysis.notebooks`: where its runs and the repository are, so it re-runs anywhere.
import os
import sys
from pathlib import Path

MADE_FROM = {{"runs": {str(runs)!r}, "runs_from_here": {os.path.relpath(runs, here)!r},
             "repository": {str(root)!r}, "repository_from_here": {os.path.relpath(root, here)!r}}}
_here = Path({notebook.name!r}).exists()  # the kernel runs in this notebook's own folder
_path = lambda name: str(Path(MADE_FROM[name + "_from_here"]).resolve()) if _here else MADE_FROM[name]
sys.path.insert(0, _path("repository"))
os.environ.setdefault("LORA_RUNS_DIR", _path("runs"))
print("runs:", os.environ["LORA_RUNS_DIR"])"""


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
    p.add_argument("--aggregate", choices=("paper", "median", "mean"), default="paper",
                   help="how a table cell sums up its seeds (see python -m analysis.tables --help)")  # fmt: skip
    args = p.parse_args(argv)
    from analysis.tables import TablesError, collect

    try:
        rows = collect(args.runs_dir)  # one clear line for an empty or missing folder, before any kernel starts
    except TablesError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    for note in rows.notes:
        sys.stderr.write(f"note: {note}\n")
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
            print(f"executed {execute(source, args.runs_dir, out, aggregate=args.aggregate)}")
        except CellExecutionError as err:
            first = next((line for line in str(err).splitlines() if "Error" in line), str(err).splitlines()[0])
            sys.stderr.write(f"error: notebook {source.name} failed: {first.strip()}\n")
            sys.exit(1)
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
