"""Reading reference and prediction files the way the E2E challenge's ``measure_scores.py`` does.

References come as (a) plain text, the references of one input on consecutive lines and a blank line between
inputs (a file without blank lines holds one reference per input), (b) a CSV/TSV with a header naming the MR and
reference columns (``mr``/``ref`` in the official data), whose consecutive rows with the same MR form one group, or
(c) a folder with LoRA's ``reference0``, ``reference1``, ... files (one line per input in each). Predictions are one
per line. Lines are stripped, as the official reader does. Every problem is a :class:`ScoreInputError` with a
one-line message.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from lora.files import read_text

log = logging.getLogger(__name__)
# Header patterns of measure_scores.py (source/MR column and reference column)
HEADER_SRC = r"(mr|src|source|meaning(?:[_ .-]rep(?:resentation)?)?|da|dial(?:ogue)?[_ .-]act)s?"
HEADER_REF = r"(trg|tgt|target|ref(?:erence)?|human(?:[_ .-](?:ref(?:erence)?))?)s?"
# Mojibake the official CSV reader repairs, in its order
MOJIBAKE = [("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é")]


class ScoreInputError(ValueError):
    """A reference or prediction file that cannot be scored; the message is one line meant for the user."""


def _read_text(path: str | Path) -> str:
    """As the official reader decodes (plain UTF-8): a byte-order mark stays part of the first line, so it
    scores what `measure_scores.py` scores (BLEU 0.6297 instead of 0.6364 on five example inputs); said once."""
    text = read_text(path, ScoreInputError, keep_bom=True)
    if text.startswith("\ufeff"):
        log.warning("%s starts with a byte-order mark; like the official script, BLEU and NIST read it as part "
                    "of the first line's first word (remove it to score that word)", path)  # fmt: skip
    return text


def _lines(text: str) -> list[str]:
    """Stripped lines, as ``codecs.open`` iteration + ``strip()`` gives them (no phantom line after a final newline)."""
    return [line.strip() for line in text.splitlines()]


def group_plain(lines: list[str]) -> list[list[str]]:
    """Blank-line separated groups; without any blank line, each line is its own group (single-reference file).

    >>> group_plain(["a", "b", "", "c", ""])
    [['a', 'b'], ['c']]
    >>> group_plain(["a", "b"])
    [['a'], ['b']]
    """
    groups: list[list[str]] = [[]]
    for line in lines:
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
    if not groups[-1]:
        del groups[-1]
    if len(groups) == 1:
        return [[line] for line in groups[0]]
    return groups


def read_table(path: str | Path, text: str) -> tuple[list[str], list[str]]:
    """(MRs, references) of a CSV/TSV: the official ``read_tsv`` (BOM and mojibake fixes, header guessing)."""
    lines = [line.strip() for line in text.splitlines()]
    lines[0] = lines[0].replace("\ufeff", "")
    for broken, fixed in MOJIBAKE:
        lines = [line.replace(broken, fixed) for line in lines]
    lines = [line for line in lines if line]
    rows = list(csv.reader(lines, delimiter="\t" if "\t" in lines[0] else ","))
    num_cols = len(rows[0])
    src = [i for i, field in enumerate(rows[0]) if re.match(HEADER_SRC, field, re.I)]
    ref = [i for i, field in enumerate(rows[0]) if re.match(HEADER_REF, field, re.I)]
    if len(src) == len(ref) == 1:
        src_col, ref_col, rows = src[0], ref[0], rows[1:]
    elif not src and not ref and num_cols == 2:  # no header: MR, reference
        src_col, ref_col = 0, 1
    else:
        raise ScoreInputError(f"{path}: can't tell the MR and reference columns from the header {rows[0]}")
    bad = [n for n, row in enumerate(rows, start=1) if len(row) != num_cols]
    if bad:
        raise ScoreInputError(f"{path}: wrong number of columns on data rows {bad[:5]}")
    return [row[src_col] for row in rows], [row[ref_col] for row in rows]


def group_consecutive(mrs: list[str], refs: list[str]) -> list[list[str]]:
    """References grouped by consecutive identical MRs (the official rule when predictions are plain text).

    >>> group_consecutive(["m1", "m1", "m2", "m1"], ["a", "b", "c", "d"])
    [['a', 'b'], ['c'], ['d']]
    """
    groups: list[list[str]] = []
    current = None
    for mr, ref in zip(mrs, refs, strict=True):
        if not groups or mr != current:
            groups.append([ref])
            current = mr
        else:
            groups[-1].append(ref)
    return groups


def read_lora_folder(path: Path) -> list[list[str]]:
    """LoRA's WebNLG/DART layout: ``reference0..referenceN-1``, line i of each file a reference of input i."""
    files = []
    while (path / f"reference{len(files)}").is_file():
        files.append(_lines(_read_text(path / f"reference{len(files)}")))
    if not files:
        raise ScoreInputError(f"{path}: a folder, but without reference0, reference1, ... files")
    sizes = {len(f) for f in files}
    if len(sizes) != 1:
        raise ScoreInputError(f"{path}: reference files have different line counts {sorted(sizes)}")
    return [list(group) for group in zip(*files, strict=True)]


def read_references(path: str | Path) -> list[list[str]]:
    """References grouped per input, from plain text, CSV/TSV or a LoRA reference folder (see the module doc)."""
    path = Path(path)
    if path.is_dir():
        return read_lora_folder(path)
    text = _read_text(path)
    if re.search(r"\.[ct]sv$", path.name, re.I):
        return group_consecutive(*read_table(path, text))
    return group_plain(_lines(text))


def read_predictions(path: str | Path) -> list[str]:
    """One prediction per line, stripped (empty lines are empty predictions, as in the official reader)."""
    return _lines(_read_text(path))


def check_counts(references: list[list[str]], predictions: list[str], refs_path: str, preds_path: str) -> None:
    """One line naming both files when the inputs and predictions don't line up."""
    if len(references) != len(predictions):
        raise ScoreInputError(
            f"REFS {refs_path} has {len(references)} inputs but PREDS {preds_path} has {len(predictions)} lines"
        )
