"""Readers for the data of the paper's GPT-3 SAMSum and MNLI-as-generation experiments (its Tables 4 and 16),
the low-data subsets of Table 16, and the label word a decoder generated for MNLI.

Formats and where they come from:

- SAMSum (Gliwa et al., 2019): the corpus archive its authors released with the paper (``corpus.7z``, arXiv
  1911.12237's ancillary files) holds ``train.json`` (14,732 dialogues), ``val.json`` (818) and ``test.json``
  (819), each a JSON list of ``{"id", "summary", "dialogue"}``. The hub's ``samsum`` copy is built from that
  archive and keeps the same three field names, so one reader serves both. Utterances are separated by ``\\r\\n``
  in most dialogues and ``\\n`` in others; line endings are made ``\\n`` here, the paper's separator ("we encode
  context as \\n concatenated utterances"), so that every prompt sees one separator.
- MNLI as GLUE ships it (Wang et al., 2019): ``MNLI/train.tsv`` and ``dev_matched.tsv``, tab-separated with the
  header ``index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse
  sentence2_parse sentence1 sentence2 label1 [label2 .. label5] gold_label`` (read by `glue.read_tsv`).
- MultiNLI 1.0 as its authors ship it (Williams et al., 2018; ``multinli_1.0.zip``):
  ``multinli_1.0_train.jsonl`` and ``multinli_1.0_dev_matched.jsonl``, one JSON object per line with
  ``sentence1``, ``sentence2`` and ``gold_label``. Pairs whose annotators reached no consensus have gold_label
  ``-``; they are dropped, as GLUE dropped them (its dev_matched has 9,815 of the 10,000 pairs).

Readers return plain tuples: SAMSum ``(id, dialogue, summary)``, MNLI ``(premise, hypothesis, label word)``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import TaskError, read_data
from .glue import SPECS as GLUE_SPECS
from .glue import read_tsv

MNLI_LABELS = ("entailment", "neutral", "contradiction")  # GLUE's label order

_SAMSUM_FILES = {"train": "train.json", "dev": "val.json", "test": "test.json"}
_SAMSUM_FIELDS = ("id", "dialogue", "summary")
_SAMSUM_HINT = ("unpack the SAMSum corpus (corpus.7z, the archive its authors released with arXiv 1911.12237) "
                "into that folder")  # fmt: skip
_MNLI_SPLITS = {"train": "train", "dev": "dev_matched", "dev_matched": "dev_matched",
                "dev_mismatched": "dev_mismatched"}  # fmt: skip


# --- SAMSum ---------------------------------------------------------------------------------------------------


def read_samsum(folder: Path, split: str) -> list[tuple[str, str, str]]:
    """(id, dialogue, summary) of a SAMSum split (train, dev or test) from the corpus's JSON files, file order."""
    if split not in _SAMSUM_FILES:
        raise TaskError(f"SAMSum has no split {split!r}; choose from {', '.join(_SAMSUM_FILES)}")
    file = Path(folder) / _SAMSUM_FILES[split]
    data = _json(file, read_data(file, hint=_SAMSUM_HINT))
    _check(isinstance(data, list) and bool(data), file, "the top level is not a non-empty list of dialogues")
    return [_samsum_item(file, i, item) for i, item in enumerate(data, 1)]


def _samsum_item(file: Path, i: int, item) -> tuple[str, str, str]:
    ok = isinstance(item, dict) and all(isinstance(item.get(k), str) for k in _SAMSUM_FIELDS)
    _check(ok, file, f'item {i} lacks a text "id", "dialogue" or "summary"')
    return item["id"], _unix_lines(item["dialogue"]), _unix_lines(item["summary"])


def _unix_lines(text: str) -> str:
    r"""
    >>> _unix_lines("A: hi\r\nB: hey\rA: bye\nB: bye")
    'A: hi\nB: hey\nA: bye\nB: bye'
    """
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- MNLI -----------------------------------------------------------------------------------------------------


def read_mnli(folder: Path, split: str) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label word) of MNLI's train or dev_matched split (``dev`` means dev_matched;
    dev_mismatched is accepted too), from GLUE's TSV or MultiNLI's JSONL, whichever `folder` holds.

    `folder` may be GLUE's ``MNLI`` folder or the one above it, MultiNLI's ``multinli_1.0`` folder or the one
    above it. If both layouts are there, GLUE's is read (they hold the same pairs in the same order).
    """
    if split not in _MNLI_SPLITS:
        raise TaskError(f"MNLI has no split {split!r}; choose from {', '.join(_MNLI_SPLITS)}")
    folder, name = Path(folder), _MNLI_SPLITS[split]
    tsv, jsonl = f"{name}.tsv", f"multinli_1.0_{name}.jsonl"
    for file in (folder / tsv, folder / "MNLI" / tsv):
        if file.is_file():
            return [(e.text_a, e.text_b, MNLI_LABELS[e.label]) for e in read_tsv(file, GLUE_SPECS["mnli"])]
    for file in (folder / jsonl, folder / "multinli_1.0" / jsonl):
        if file.is_file():
            return _mnli_jsonl(file)
    raise TaskError(
        f"MNLI {name} not found in {folder}: expected GLUE's {tsv} (the GLUE benchmark's MNLI folder) or "
        f"MultiNLI's {jsonl} (the MultiNLI 1.0 release, multinli_1.0.zip); unpack either into that folder"
    )


def _mnli_jsonl(file: Path) -> list[tuple[str, str, str]]:
    out = []
    for n, line in enumerate(read_data(file).splitlines(), 1):
        if not line.strip():
            continue  # a trailing blank line is not a pair
        row = _json(file, line, f"line {n}")
        ok = isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("sentence1", "sentence2"))
        _check(ok, file, f'line {n} lacks a text "sentence1" or "sentence2"')
        label = row.get("gold_label")
        if label == "-":
            continue  # no annotator consensus: GLUE leaves these out, and so do we
        _check(label in MNLI_LABELS, file, f"line {n}: gold_label {label!r} is not one of {', '.join(MNLI_LABELS)}")
        out.append((row["sentence1"], row["sentence2"], label))
    _check(bool(out), file, "no labelled pairs")
    return out


def label_from_text(text: str) -> str | None:
    """The MNLI label word a model generated: its first word, lower-cased, punctuation stripped from both ends;
    None when that is not one of MNLI_LABELS (an unparsable answer counts as wrong, not as a guess).

    >>> [label_from_text(t) for t in [" Entailment.", "neutral\\nbecause", '"contradiction",', "entails", ""]]
    ['entailment', 'neutral', 'contradiction', None, None]
    """
    words = text.split()
    word = words[0].strip(string.punctuation).lower() if words else ""
    return word if word in MNLI_LABELS else None


# --- Table 16's low-data subsets ------------------------------------------------------------------------------


def low_data_subset(examples: Sequence, n: int, seed: int, label: Callable[[Any], Any] = lambda e: e[-1]) -> list:
    """`n` examples, class-balanced, drawn without replacement and fixed by `seed`: Table 16's MNLI-100/1k/10k.

    The paper says only "we randomly sample 100, 1k and 10k training examples from the full training set of
    MNLI" (its Appendix F.3): not whether the draw is stratified, nested or seeded, nor which examples it used.
    We draw class-balanced subsets: `n // K` examples of each of the K classes, and one more for each of the
    first `n % K` classes in sorted order (MNLI-100: 34 contradiction, 33 entailment, 33 neutral). MNLI's training
    set is close to equal thirds, so this is the expected make-up of a plain random draw without its spread
    (about +-5 examples per class at n=100), which would otherwise differ between seeds and methods.

    Which examples: one permutation of all positions from NumPy's legacy `RandomState(seed)`, whose stream NumPy
    keeps unchanged across versions; each class takes its first examples in that permutation. So a subset is the
    same on every machine, and for one seed the 100 examples lie within the 1k, and the 1k within the 10k. The
    subset is returned in the order of `examples`.

    >>> data = list(enumerate("aabbbbcccc"))  # (position, label): 5 = 3 * 1 + 2, so a and b get 2, c gets 1
    >>> low_data_subset(data, 5, seed=0)
    [(0, 'a'), (1, 'a'), (2, 'b'), (4, 'b'), (8, 'c')]
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"a subset needs n >= 1 examples, got {n!r}")
    if n > len(examples):
        raise ValueError(f"a subset of {n} examples was asked of {len(examples)}")
    labels = [label(e) for e in examples]
    classes = sorted(set(labels))
    quota = {c: n // len(classes) + (k < n % len(classes)) for k, c in enumerate(classes)}
    for c in classes:
        if labels.count(c) < quota[c]:
            raise ValueError(f"class {c!r} has {labels.count(c)} examples, fewer than its {quota[c]} of {n} balanced")
    chosen = []
    for i in np.random.RandomState(seed).permutation(len(examples)).tolist():
        if quota[labels[i]]:
            quota[labels[i]] -= 1
            chosen.append(i)
    return [examples[i] for i in sorted(chosen)]


# --- shared helpers -------------------------------------------------------------------------------------------


def _check(ok: bool, file: Path, what: str) -> None:
    if not ok:
        raise TaskError(f"{file} is malformed: {what}; re-download the released file")


def _json(file: Path, text: str, where: str = ""):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        at = f" at {where}" if where else ""
        raise TaskError(f"{file} is not valid JSON{at} ({err}); re-download the released file") from None
