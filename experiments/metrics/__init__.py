"""NLG metrics as the LoRA paper reports them: E2E (official e2e-metrics script) and WebNLG/DART (LoRA's eval.py).

``e2e_scores`` equals ``measure_scores.py -p`` of tuetschek/e2e-metrics (what microsoft/LoRA runs): BLEU and NIST
from a port of its Python MT-Eval (:mod:`.mteval`; ``nist="perl"`` gives the default Perl script's NIST), METEOR,
ROUGE_L and CIDEr from the coco-caption code (:mod:`.coco`). All five are what the script prints, at full precision
(BLEU and METEOR as fractions, not points). ``webnlg_scores`` gives BLEU in points, METEOR and TER as fractions, the
scales of the paper's WebNLG/DART tables (:mod:`.webnlg`). METEOR and the PTB tokenizer run on Java.
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.metrics.coco import JavaMissing, coco_scores, require_java
from experiments.metrics.files import ScoreInputError, read_predictions, read_references
from experiments.metrics.mteval import bleu_nist
from experiments.metrics.webnlg import webnlg_scores

__all__ = [
    "E2E_METRICS",
    "JavaMissing",
    "ScoreInputError",
    "e2e_scores",
    "read_predictions",
    "read_references",
    "score",
    "webnlg_scores",
]

E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")


def e2e_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str], nist: str = "python") -> dict:
    """The five E2E challenge metrics of grouped references and one hypothesis per group, official order.

    ``nist="python"`` is ``measure_scores.py -p`` (microsoft/LoRA); ``"perl"`` the Perl MT-Eval's NIST length penalty
    (BLEU is the same). Java is checked first, so a missing JRE fails before any work is done.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference groups but {len(hypotheses)} hypotheses")
    require_java()
    bleu, nist_score = bleu_nist(hypotheses, references, nist)
    scores = {"BLEU": bleu, "NIST": nist_score, **coco_scores(references, hypotheses)}
    return {name: scores[name] for name in E2E_METRICS}


def score(
    task: str, references: Sequence[Sequence[str]], hypotheses: Sequence[str], nist: str = "python"
) -> dict[str, float]:
    """The paper's metrics for a task: E2E's five (``nist="perl"``: the Perl NIST), or BLEU/METEOR/TER
    for WebNLG and DART."""
    if task not in ("e2e", "webnlg", "dart"):
        raise ValueError(f"no metric suite for {task!r}; choose e2e, webnlg or dart")
    return e2e_scores(references, hypotheses, nist=nist) if task == "e2e" else webnlg_scores(references, hypotheses)
