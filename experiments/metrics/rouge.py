"""ROUGE-1, ROUGE-2 and ROUGE-L F1 for SAMSum (the paper's Table 4 reports them for GPT-3 as R1/R2/RL).

The paper names no ROUGE implementation or setting (its Appendix C describes only how SAMSum is encoded), so the
computation here is a choice, and every part of it is a parameter of `samsum_rouge` with a default:

- Implementation: Google's ``rouge-score`` package (a Python reimplementation of ROUGE-1.5.5), which the Hugging
  Face ``evaluate`` "rouge" metric and transformers' summarization example also use.
- Tokenisation: rouge-score's default tokenizer: lower-case, every run of characters other than ``a-z0-9`` is a
  separator (so punctuation, emoji and non-ASCII letters vanish). ``tokenizer`` replaces it.
- Stemming: Porter stemmer on tokens longer than 3 characters (``use_stemmer=True``: "running" and "runs" both
  become "run"), as transformers' summarization example (``run_summarization.py``, the usual recipe for SAMSum
  fine-tuning) passes it. ``evaluate``'s own default is False.
- ROUGE-L: ``rougeL``, the longest common subsequence of the whole summary. ``rouge_l="rougeLsum"`` gives the
  summary-level LCS instead, with sentences split at newlines (rouge-score's rule; transformers' example first puts
  a newline after every NLTK-detected sentence, which needs NLTK's Punkt model, not available offline here). On
  one-line summaries the two are equal.
- Aggregation: the mean of the per-example F1 (``aggregate="mean"``), deterministic. ``evaluate`` (default
  ``use_aggregator=True``) and transformers' example report rouge-score's ``BootstrapAggregator`` "mid" instead:
  the median of 1,000 bootstrap means, an estimate of the same mean that changes from run to run because it
  resamples with NumPy's global generator (``aggregate="bootstrap"`` gives it).

Scores are fractions (the paper prints points: 53.8 is 0.538). An empty prediction scores 0.
"""

from __future__ import annotations

from statistics import fmean
from typing import Literal


def samsum_rouge(
    predictions: list[str],
    references: list[str],
    use_stemmer: bool = True,
    tokenizer=None,
    rouge_l: Literal["rougeL", "rougeLsum"] = "rougeL",
    aggregate: Literal["mean", "bootstrap"] = "mean",
) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of one prediction per reference, aggregated over examples (module docstring
    for each choice). `tokenizer`: an object with ``tokenize(text) -> list[str]``; None is rouge-score's default
    (a custom tokenizer does its own stemming: `use_stemmer` is then ignored, as rouge-score ignores it).

    >>> samsum_rouge(["Amanda baked cookies."], ["Amanda baked cookies"])
    {'ROUGE-1': 1.0, 'ROUGE-2': 1.0, 'ROUGE-L': 1.0}
    >>> samsum_rouge(["the cat", "a dog"], ["the cat", "the bird"])  # mean of (1, 0) per type
    {'ROUGE-1': 0.5, 'ROUGE-2': 0.5, 'ROUGE-L': 0.5}
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    if rouge_l not in ("rougeL", "rougeLsum") or aggregate not in ("mean", "bootstrap"):
        raise ValueError(f"rouge_l is rougeL or rougeLsum, aggregate mean or bootstrap; got {rouge_l!r}, {aggregate!r}")
    # Imported here: rouge_score imports nltk, which takes seconds, and the task modules import this one.
    from rouge_score import rouge_scorer, scoring

    types = ("rouge1", "rouge2", rouge_l)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer, tokenizer=tokenizer)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]  # (target, pred)
    if aggregate == "mean":
        f1 = {t: fmean(s[t].fmeasure for s in scores) for t in types}
    else:
        aggregator = scoring.BootstrapAggregator()
        for s in scores:
            aggregator.add_scores(s)
        f1 = {t: v.mid.fmeasure for t, v in aggregator.aggregate().items()}
    return {"ROUGE-1": float(f1["rouge1"]), "ROUGE-2": float(f1["rouge2"]), "ROUGE-L": float(f1[rouge_l])}
