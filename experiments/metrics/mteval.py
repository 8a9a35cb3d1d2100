"""Corpus BLEU and NIST exactly as the E2E challenge's Python MT-Eval computes them.

This is a hand-written port of ``metrics/pymteval.py`` from tuetschek/e2e-metrics (commit 1b9c4d8), the code that
``measure_scores.py -p`` runs and that microsoft/LoRA uses for its E2E numbers. It is ported rather than imported
because the official code is not on PyPI. Both scores are case-insensitive (``str.lower``) and use the
mteval-v13a tokenization; BLEU takes the closest reference length (ties to the shorter); NIST uses 5-grams with
information weights from the reference n-gram counts of the evaluated set.

The one deliberate option is ``nist(..., avg_ref_len="perl")``: the default official script runs the Perl
``mteval-v13a-sig.pl`` instead, whose NIST length penalty uses the corpus-level average reference length
(total reference words x segments / number of references) rather than the sum over segments of each segment's mean
reference length. That is the only difference between the two NIST variants; BLEU is identical in both.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

# NIST beta (mteval-v13a.pl): the length penalty is 0.5 when the output is 2/3 of the reference length.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
_TINY = 1e-15  # BLEU's forced smoothing of zero hit counts (pymteval)
_SMALL = 1e-9  # ... and of zero candidate lengths

_TOKENIZE = [
    (re.compile(r"<skipped>"), ""),
    (re.compile(r"-\n"), ""),
    (re.compile(r"\n"), " "),
    (re.compile(r"&quot;"), '"'),
    (re.compile(r"&amp;"), "&"),
    (re.compile(r"&lt;"), "<"),
    (re.compile(r"&gt;"), ">"),
]
_PUNCT = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
    (re.compile(r"\s+"), " "),
]

log = logging.getLogger(__name__)


def tokenize(sent: str) -> list[str]:
    """mteval-v13a tokenization, as pymteval writes it (punctuation split, not between digits).

    >>> tokenize("It costs £20-25, near the Café.")
    ['It', 'costs', '£20', '-', '25', ',', 'near', 'the', 'Café', '.']
    """
    for pattern, repl in _TOKENIZE:
        sent = pattern.sub(repl, sent)
    sent = " " + sent + " "
    for pattern, repl in _PUNCT:
        sent = pattern.sub(repl, sent)
    return sent.strip().split(" ")


def ngrams(n: int, toks: Sequence[str]) -> list[tuple[str, ...]]:
    """The n-grams of a token list (tokens are already lowercased by :func:`_prepare`).

    >>> ngrams(2, ["a", "b", "c"])
    [('a', 'b'), ('b', 'c')]
    """
    return list(zip(*[toks[i:] for i in range(n)], strict=False))


def max_ref_counts(n: int, refs: Sequence[Sequence[str]]) -> dict[tuple[str, ...], int]:
    """Per n-gram, its largest count in any one reference: the clipping limit for hits."""
    merged: dict[tuple[str, ...], int] = {}
    for ref in refs:
        for gram, cnt in Counter(ngrams(n, ref)).items():
            merged[gram] = max(merged.get(gram, 0), cnt)
    return merged


def clipped_hits(n: int, hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[tuple[str, ...], int]:
    """Hypothesis n-grams with their clipped match counts (only those with at least one hit)."""
    limits = max_ref_counts(n, refs)
    hits = {gram: min(cnt, limits.get(gram, 0)) for gram, cnt in Counter(ngrams(n, hyp)).items()}
    return {gram: h for gram, h in hits.items() if h}


def _prepare(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[tuple[list[str], list[list[str]]]]:
    """Tokenize and lowercase once; pymteval lowercases inside its n-gram function, which is equivalent."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(refs)} reference groups but {len(hyps)} hypotheses")
    low = lambda s: [t.lower() for t in tokenize(s)]
    return [(low(h), [low(r) for r in rs]) for h, rs in zip(hyps, refs, strict=True)]


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (fraction), pymteval ``BLEUScore()`` with its default settings.

    >>> bleu(["The cat sat on the mat."], [["the cat sat on the mat .", "a cat"]])  # case-insensitive
    1.0
    """
    return bleu_nist(hyps, refs)[0]


def nist(hyps: Sequence[str], refs: Sequence[Sequence[str]], avg_ref_len: str = "python") -> float:
    """Corpus NIST, pymteval ``NISTScore()``; ``avg_ref_len="perl"`` gives mteval-v13a-sig.pl's length penalty."""
    return bleu_nist(hyps, refs, avg_ref_len)[1]


def bleu_nist(hyps: Sequence[str], refs: Sequence[Sequence[str]], avg_ref_len: str = "python") -> tuple[float, float]:
    """(BLEU, NIST) from one tokenization pass: what ``measure_scores.py -p`` reports (``"perl"``: its NIST)."""
    if avg_ref_len not in ("python", "perl"):
        raise ValueError(f"avg_ref_len must be 'python' or 'perl', not {avg_ref_len!r}")
    data = _prepare(hyps, refs)
    return _bleu(data), _nist(data, avg_ref_len)


def _bleu(data: list[tuple[list[str], list[list[str]]]], max_ngram: int = 4) -> float:
    hits, cand, ref_len = [0] * max_ngram, [0] * max_ngram, 0
    for hyp, rs in data:
        for i in range(max_ngram):
            hits[i] += sum(clipped_hits(i + 1, hyp, rs).values())
            cand[i] += len(hyp) - i
        # closest reference length, ties to the shorter one
        ref_len += len(min(rs, key=lambda r: (abs(len(r) - len(hyp)), len(r))))
    if min(cand) <= 0:  # `len(hyp) - i` per output, as the official code counts: negative for short outputs
        n, count = cand.index(min(cand)) + 1, min(cand)
        log.warning("outputs this short leave a %d-gram candidate count of %d: BLEU is not a precision here "
                    "(the official script computes the same, and can exceed 1)", n, count)  # fmt: skip
    bp = 1.0
    if cand[0] <= ref_len:
        bp = math.exp(1.0 - ref_len / (float(cand[0]) if cand[0] else 1e-5))
    log_sum = sum(math.log(max(float(h), _TINY) / max(float(c), _SMALL)) for h, c in zip(hits, cand, strict=True))
    return bp * math.exp((1.0 / max_ngram) * log_sum)


def nist_length_penalty(sys_len: float, avg_ref_len: float) -> float:
    """NIST brevity penalty: 1 for outputs at least as long as the references, Gaussian in the log ratio below.

    >>> round(nist_length_penalty(2, 3), 12)  # 2/3 of the reference length costs half the score, by construction
    0.5
    """
    ratio = sys_len / float(avg_ref_len)
    if ratio >= 1:
        return 1
    if ratio <= 0:
        return 0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


def _nist(data: list[tuple[list[str], list[list[str]]]], avg_ref_len: str, max_ngram: int = 5) -> float:
    ref_counts: list[defaultdict] = [defaultdict(int) for _ in range(max_ngram + 1)]  # index 0: total ref words
    hit_ngrams: list[list[dict]] = [[] for _ in range(max_ngram)]
    cand_lens = [0] * max_ngram
    py_avg, ref_words, n_refs = 0.0, 0, 0
    for hyp, rs in data:
        for n in range(max_ngram):
            cand_lens[n] += len(hyp) - n
            hit_ngrams[n].append(clipped_hits(n + 1, hyp, rs))
            for r in rs:
                for gram in ngrams(n + 1, r):
                    ref_counts[n + 1][gram] += 1
        seg_words = sum(len(r) for r in rs)
        ref_counts[0][()] += seg_words
        py_avg += seg_words / float(len(rs))  # pymteval: sum of per-segment mean reference lengths
        ref_words, n_refs = ref_words + seg_words, n_refs + len(rs)

    def info(gram: tuple[str, ...]) -> float:
        if gram not in ref_counts[len(gram)]:
            return 0.0
        return math.log(ref_counts[len(gram) - 1][gram[:-1]] / float(ref_counts[len(gram)][gram]), 2)

    total = 0.0
    for n in range(max_ngram):
        hit_info = 0.0
        for seg_hits in hit_ngrams[n]:
            hit_info += sum(info(gram) * h for gram, h in seg_hits.items())
        # pymteval divides by zero when no output has n words; there are no n-gram hits then, so count 0
        total += hit_info / cand_lens[n] if cand_lens[n] else 0.0
    # mteval-v13a-sig.pl: corpus-level average over the non-empty references
    avg = py_avg if avg_ref_len == "python" else ref_words * len(data) / n_refs
    return nist_length_penalty(cand_lens[0], avg) * total
