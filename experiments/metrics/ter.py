"""Sentence TER as ``pyter3`` 0.3 computes it, the TER behind microsoft/LoRA's WebNLG and DART numbers.

LoRA replaces GenerationEval's ``eval.py`` with its own, whose ``ter_score`` calls ``pyter.ter(hyp.split(),
ref.split())`` for every reference, keeps the minimum per segment (1 for an empty reference or any error) and
averages over segments. That is neither tercom nor sacrebleu's corpus TER (total edits / total reference length):
pyter shifts greedily (the shift that lowers the edit distance most, ties to the lexicographically largest result),
only considers the longest match starting at each pair of positions with different indices, and divides by the
length of the reference it is compared with. Hand-ported (pyter3 is not a dependency of this project); the DP below
is plain word-level Levenshtein, as pyter's cached one, with rows reused for the unchanged prefix.
"""

from __future__ import annotations

from collections.abc import Sequence


def _rows(hyp: Sequence[str], ref: Sequence[str], first: list[int], start: int) -> list[list[int]]:
    """Levenshtein DP rows for hyp[start:], continuing from the row ``first`` (the row after hyp[:start])."""
    rows = [first]
    for word in hyp[start:]:
        prev = rows[-1]
        left = prev[0] + 1
        row = [left]
        for diag, up, rword in zip(prev, prev[1:], ref, strict=False):  # the hot loop: no min(), no indexing
            best = diag if word == rword else diag + 1
            if up + 1 < best:
                best = up + 1
            if left + 1 < best:
                best = left + 1
            row.append(best)
            left = best
        rows.append(row)
    return rows


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
    """Word-level Levenshtein distance.

    >>> edit_distance("a b c d".split(), "a c d e".split())
    2
    """
    return _rows(hyp, ref, list(range(len(ref) + 1)), 0)[-1][-1]


def _pairs(hyp: Sequence[str], ref: Sequence[str]):
    """pyter's shift candidates: (hyp start, ref start, longest match length), skipping equal indices."""
    for i in range(len(hyp)):
        for j in range(len(ref)):
            if i == j or hyp[i] != ref[j]:
                continue
            length = 1
            while i + length < len(hyp) and j + length < len(ref) and hyp[i + length] == ref[j + length]:
                length += 1
            yield i, j, length


def _best_shift(hyp: list[str], ref: Sequence[str]) -> tuple[int, list[str]]:
    """The shift that lowers the edit distance most (pyter: max of (gain, shifted words))."""
    rows = _rows(hyp, ref, list(range(len(ref) + 1)), 0)
    before = rows[-1][-1]
    best: tuple[int, list[str]] | None = None
    for i, j, length in _pairs(hyp, ref):
        shifted = hyp[:i] + hyp[i + length :]
        shifted[j:j] = hyp[i : i + length]
        keep = min(i, j)  # shifted[:keep] == hyp[:keep]: reuse those DP rows
        cand = (before - _rows(shifted, ref, rows[keep], keep)[-1][-1], shifted)
        if best is None or cand > best:
            best = cand
    return best if best is not None else (0, hyp)


def pyter_ter(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """``pyter.ter``: (greedy shifts + edit distance after them) / reference length.

    >>> ref = "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times".split()
    >>> hyp = "THIS WEEK THE SAUDIS denied information published in the new york times".split()
    >>> round(pyter_ter(hyp, ref), 3)  # pyter's own doctest
    0.308
    """
    words, shifts = list(hyp), 0
    while True:
        gain, shifted = _best_shift(words, ref)
        if gain <= 0:
            break
        shifts, words = shifts + 1, shifted
    return (shifts + edit_distance(words, ref)) / len(ref)


def lora_ter(refs_tok: Sequence[Sequence[str]], hyps_tok: Sequence[str]) -> float:
    """LoRA eval.py's TER: mean over segments of the best (lowest) pyter TER against any reference.

    >>> lora_ter([["a b c", "x"]], ["a b c"])
    0.0
    """
    scores = []
    for refs, hyp in zip(refs_tok, hyps_tok, strict=True):
        per_ref = [pyter_ter(hyp.split(), ref.split()) if ref.split() else 1.0 for ref in refs]
        scores.append(min(per_ref))
    return sum(scores) / len(scores)
