"""METEOR 1.5, ROUGE_L and CIDEr as the E2E challenge's ``measure_scores.py`` computes them (MS-COCO caption code).

The official script (tuetschek/e2e-metrics @ 1b9c4d8) vendors the coco-caption evaluation code. We take the same
pieces from the ``pycocoevalcap`` package (1.2), whose three large files are byte-identical to the vendored ones:

- PTB tokenization: Stanford CoreNLP 3.4.1 ``PTBTokenizer -preserveLines -lowerCase``, then punctuation tokens are
  dropped (the package's ``PUNCTUATIONS`` list). Run once over references and hypotheses together here (the script
  runs it twice); with ``-preserveLines`` every line is tokenized on its own, so the tokens are the same. The temporary
  file goes to a temporary folder, not beside the jar as in ``PTBTokenizer`` (site-packages may be read-only).
- METEOR: ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``; one ``SCORE`` line per instance, then one
  ``EVAL`` line with all statistics. The corpus score is METEOR's own aggregate (the last line of the ``EVAL``
  answer), not the mean of segment scores. This is the same protocol as both the vendored and the packaged
  ``Meteor`` wrapper; ours closes its JVM deterministically instead of in ``__del__``. ``coco_scores`` reuses one
  JVM per process (``shared_meteor``), as the wrapper reuses its own across calls: an ``EVAL`` is scored from the
  statistics sent with it, so the scores do not depend on what the JVM scored before.
- ROUGE_L (LCS F-measure, beta 1.2) and CIDEr (CIDEr-D, document frequencies from the evaluated references):
  the package's ``Rouge`` and ``Cider`` classes, unchanged.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pycocoevalcap.cider.cider as _cider
import pycocoevalcap.rouge.rouge as _rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

_PACKAGE = Path(_cider.__file__).resolve().parent.parent  # pycocoevalcap is a namespace package: no __file__
PTB_JAR = _PACKAGE / "tokenizer" / "stanford-corenlp-3.4.1.jar"
METEOR_JAR = _PACKAGE / "meteor" / "meteor-1.5.jar"
JAVA_HINT = (
    "METEOR and the PTB tokenizer need Java (java not found on PATH); install a JRE, "
    "e.g. `apt install default-jre-headless`"
)


class JavaMissing(RuntimeError):
    """Java is needed for METEOR and the PTB tokenizer and is not on PATH."""


def require_java() -> str:
    """The path of ``java``, or :class:`JavaMissing` with a one-line hint, before any JVM is started."""
    java = shutil.which("java")
    if java is None:
        raise JavaMissing(JAVA_HINT)
    return java


def strip_punctuation(line: str) -> str:
    """Drop the tokens coco-caption treats as punctuation, as ``PTBTokenizer.tokenize`` does.

    >>> strip_punctuation("the eagle , a pub -LRB- cheap -RRB- . ''")
    'the eagle a pub cheap'
    >>> strip_punctuation("-lrb- as -lowerCase writes it -rrb-")  # not in the list: kept, as officially
    '-lrb- as -lowerCase writes it -rrb-'
    """
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenize with CoreNLP's PTBTokenizer (lowercased, one line each) and strip punctuation tokens."""
    java = require_java()
    with tempfile.TemporaryDirectory(prefix="ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes("\n".join(s.replace("\n", " ") for s in sentences).encode("utf-8"))
        cmd = [java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        proc = subprocess.run([*cmd, str(path)], capture_output=True, encoding="utf-8", check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = proc.stdout.split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [strip_punctuation(line) for line in lines[: len(sentences)]]


class Meteor:
    """A METEOR 1.5 JVM in ``-stdio`` mode (as coco-caption's wrapper); use as a context manager to close it."""

    def __init__(self) -> None:
        java = require_java()
        cmd = [java, "-jar", "-Xmx2G", str(METEOR_JAR), "-", "-", "-stdio", "-l", "en", "-norm"]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the JVM, closed in close()
        # cwd beside the jar, as the wrapper does (METEOR finds its paraphrase table relative to the jar)
        self._proc = subprocess.Popen(
            cmd, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        self._lock = threading.Lock()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Stop the JVM and reap it (the coco wrapper only does this when garbage-collected)."""
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def _ask(self, line: str) -> str:
        self._proc.stdin.write((line + "\n").encode("utf-8"))
        self._proc.stdin.flush()
        return self._read()

    def _read(self) -> str:
        answer = self._proc.stdout.readline()
        if not answer:
            self._stderr.seek(0)
            tail = self._stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            raise RuntimeError(f"METEOR stopped unexpectedly: {tail[0] if tail else 'no message'}")
        return answer.decode("utf-8").strip()

    def corpus_score(self, refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> tuple[float, list[float]]:
        """(METEOR's aggregate corpus score, segment scores) for tokenized references and hypotheses."""
        with self._lock:
            stats = []
            for rs, hyp in zip(refs, hyps, strict=True):
                hyp = hyp.replace("|||", "").replace("  ", " ")  # as the wrapper: ||| is the field separator
                stats.append(self._ask(" ||| ".join(("SCORE", " ||| ".join(rs), hyp))))
            first = self._ask(" ||| ".join(["EVAL", *stats]))
            segments = [float(first)] + [float(self._read()) for _ in range(len(stats) - 1)]
            return float(self._read()), segments


_SHARED: dict[int, Meteor] = {}  # process id -> that process's JVM
_SHARED_LOCK = threading.Lock()


def shared_meteor() -> Meteor:
    """This process's METEOR JVM, started on first use and closed at exit. Each start loads METEOR's paraphrase
    table (~10 s of CPU), and a sweep, a run's dev and test scoring or a test session score many small corpora.
    A forked child starts its own (it must not write into its parent's pipe); one that stopped is replaced."""
    with _SHARED_LOCK:
        meteor = _SHARED.get(os.getpid())
        if meteor is None or not meteor.alive():
            meteor = _SHARED[os.getpid()] = Meteor()
            atexit.register(meteor.close)
        return meteor


def coco_scores(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], meteor: bool = True
) -> dict[str, float]:
    """METEOR, ROUGE_L and CIDEr of ``measure_scores.py`` for grouped references and one hypothesis per group.

    ``meteor=False`` skips METEOR, whose JVM takes ~10 s to load its paraphrase table (for quick checks); with it,
    the process's one JVM is started on the first call and reused.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference groups but {len(hypotheses)} hypotheses")
    flat = [r for rs in references for r in rs]
    tokens = ptb_tokenize(flat + list(hypotheses))
    gts, res, pos = {}, {}, 0
    for i, rs in enumerate(references):
        gts[f"inst-{i}"], pos = tokens[pos : pos + len(rs)], pos + len(rs)
    for i in range(len(hypotheses)):
        res[f"inst-{i}"] = [tokens[len(flat) + i]]
    scores = {}
    if meteor:
        scores["METEOR"], _ = shared_meteor().corpus_score(list(gts.values()), [r[0] for r in res.values()])
    rouge, _ = _rouge.Rouge().compute_score(gts, res)
    cider, _ = _cider.Cider().compute_score(gts, res)
    return {**scores, "ROUGE_L": float(rouge), "CIDEr": float(cider)}
