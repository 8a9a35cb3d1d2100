"""Score NLG predictions against references: ``python -m experiments.score {e2e,webnlg,dart} REFS PREDS``.

E2E prints the official script's five metrics (``BLEU: 0.7203`` ...; ``measure_scores.py -p`` by default,
``--nist perl`` for its default Perl NIST); WebNLG and DART print BLEU (points), METEOR and TER as LoRA's eval.py
computes them. ``--json`` prints one JSON object with full-precision values instead. Bad input: one ``error:`` line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from experiments import metrics
from experiments.metrics import JavaMissing, ScoreInputError, read_predictions, read_references
from experiments.metrics.files import check_counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m experiments.score", description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=["e2e", "webnlg", "dart"])
    ap.add_argument(
        "refs",
        help="references: grouped plain text (blank line between inputs), CSV/TSV, or a folder "
        "of LoRA reference0.. files",
    )
    ap.add_argument("preds", help="predictions, one per line")
    ap.add_argument("--json", action="store_true", help="print one JSON object (full precision)")
    ap.add_argument("--nist", choices=["python", "perl"], default="python", help="E2E NIST variant (default python)")
    return ap.parse_args(argv)


def score(task: str, refs_path: str, preds_path: str, nist: str = "python") -> dict[str, float]:
    """Read both files, check they line up, and compute the task's metrics."""
    references, predictions = read_references(refs_path), read_predictions(preds_path)
    check_counts(references, predictions, refs_path, preds_path)
    return metrics.score(task, references, predictions, nist=nist)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scores = score(args.task, args.refs, args.preds, args.nist)
    except (ScoreInputError, JavaMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(scores))
    else:
        for name, value in scores.items():
            print(f"{name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
