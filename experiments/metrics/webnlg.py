"""BLEU, METEOR and TER for WebNLG and DART as microsoft/LoRA scores them (its ``eval.py`` in GenerationEval).

LoRA's pipeline (examples/NLG, commit c4593f06): ``gpt2_decode.py --tokenize --lower --ref_num 6`` lowercases every
reference and hypothesis, splits it at every non-word character (:func:`lora_preprocess`) and writes at most 6
references per input (missing ones filled with the first); then ``eval.py -nr 6 -m bleu,meteor,ter`` reports:

- BLEU: Moses ``multi-bleu-detok.perl`` (mteval-v13a tokenization, case-sensitive, closest reference length) on
  those files, printed in points with 2 decimals. Here: ``sacrebleu.corpus_bleu(tokenize="13a",
  lowercase=False, smooth_method="none", force=True)``, the same computation, in points at full precision.
- METEOR: ``java -Xmx2G -jar meteor-1.5.jar HYP REF -l en -norm -r 6`` on NLTK-tokenized text, the ``Final score``
  (a fraction). Here: the same jar (the one shipped in ``pycocoevalcap``, byte-identical to the official 1.5 release
  jar used by the e2e-metrics repo), the same options. NLTK's ``word_tokenize`` needs the Punkt model, which is not
  available offline, so sentences are split with a simple regex before NLTK's word tokenizer; on LoRA-preprocessed
  text, where every period is already a token, this gives the same tokens.
- TER: pyter3 sentence TER, min over references, mean over segments (a fraction): :mod:`experiments.metrics.ter`.
  (GenerationEval's own eval.py uses the same pyter call; neither uses tercom.)

Padding a reference group with copies of its first reference changes none of the three numbers, so groups of any
size are accepted. Known residual difference: LoRA's eval.py reads files with ``read().split("\\n")``, so a final
newline adds one empty segment with TER 1 to the mean (about +0.0003 on WebNLG's 1,862 inputs); it is not added here.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sacrebleu

from experiments.metrics.coco import METEOR_JAR, require_java
from experiments.metrics.ter import lora_ter

LORA_NUM_REFS = 6  # gpt2_decode.py --ref_num 6 / eval.py -nr 6, for WebNLG and DART alike
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def lora_preprocess(sent: str) -> str:
    """gpt2_decode.py ``post_process(sent, is_tokenize=True, is_lower=True)``; applying it twice changes nothing.

    >>> lora_preprocess("Aarhus Airport's runway is 2,702.0 m long.")
    "aarhus airport ' s runway is 2 , 702 . 0 m long ."
    """
    return " ".join(" ".join(re.split(r"(\W)", sent.lower())).split())


@functools.cache
def _word_tokenizer():
    """NLTK's Treebank-style word tokenizer; imported late because ``import nltk`` takes seconds."""
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokenize(text: str) -> str:
    """NLTK word tokenization (eval.py: ``' '.join(nltk.word_tokenize(text))``) without the Punkt model.

    >>> word_tokenize('He said "hi". Then he left.')
    "He said `` hi '' . Then he left ."
    """
    return " ".join(tok for sent in _SENT_END.split(text) for tok in _word_tokenizer().tokenize(sent))


def bleu(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
    """multi-bleu-detok.perl's BLEU in points (case-sensitive 13a, closest reference length, no smoothing)."""
    streams = padded(references, max(len(rs) for rs in references))
    result = sacrebleu.corpus_bleu(
        list(hypotheses), streams, tokenize="13a", lowercase=False, smooth_method="none", force=True
    )
    return float(result.score)


def padded(references: Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """References as n streams (sacrebleu's layout), short groups filled with their first reference as LoRA does."""
    return [[rs[k] if k < len(rs) else rs[0] for rs in references] for k in range(n)]


def meteor(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
    """METEOR 1.5 ``-l en -norm -r N`` in file mode, its ``Final score`` line (as eval.py parses it)."""
    java = require_java()
    n = max(len(rs) for rs in references)
    streams = padded(references, n)
    with tempfile.TemporaryDirectory(prefix="meteor-") as tmp:
        hyp_path, ref_path = Path(tmp) / "hypothesis", Path(tmp) / "reference"
        hyp_path.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")  # an empty last line counts
        ref_path.write_text("".join(streams[k][i] + "\n" for i in range(len(hypotheses)) for k in range(n)), "utf-8")
        cmd = [java, "-Xmx2G", "-jar", str(METEOR_JAR), str(hyp_path), str(ref_path), "-l", "en", "-norm", "-r"]
        proc = subprocess.run([*cmd, str(n)], capture_output=True, cwd=METEOR_JAR.parent, check=False)
    out = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0 or not out or not out[-1].startswith("Final score"):
        raise RuntimeError(f"METEOR failed ({proc.returncode}): {proc.stderr.decode('utf-8', 'replace')[-500:]}")
    return float(out[-1].split()[-1])


def webnlg_scores(
    references: Sequence[Sequence[str]],
    hypotheses: Sequence[str],
    preprocess: bool = True,
    max_refs: int = LORA_NUM_REFS,
) -> dict[str, float]:
    """BLEU (points), METEOR and TER (fractions) as in the LoRA paper's WebNLG/DART tables.

    ``preprocess`` applies LoRA's decode-time lowercasing and splitting; ``max_refs`` keeps the first 6 references
    per input, as LoRA's decode writes only 6 reference files.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference groups but {len(hypotheses)} hypotheses")
    if preprocess:
        references = [[lora_preprocess(r) for r in rs] for rs in references]
        hypotheses = [lora_preprocess(h) for h in hypotheses]
    references = [list(rs[:max_refs]) for rs in references]
    refs_tok = [[word_tokenize(r) for r in rs] for rs in references]
    hyps_tok = [word_tokenize(h) for h in hypotheses]
    return {
        "BLEU": bleu(references, hypotheses),
        "METEOR": meteor(refs_tok, hyps_tok),
        "TER": lora_ter(refs_tok, hyps_tok),
    }
