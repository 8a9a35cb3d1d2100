"""GLUE (Wang et al., 2019): the eight tasks of the paper's Table 2, from the released TSV files.

The files are read from `<data_dir>/<Folder>/<split>.tsv` (default `$LORA_DATA_DIR/glue`), or from the
hub's `nyu-mll/glue` when the files are absent and the hub is reachable.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.glue import glue_metrics
from ..paths import data_dir
from .base import Example, TaskError, insert_special_tokens, read_data


@dataclass(frozen=True)
class GlueSpec:
    folder: str
    text: tuple[str, ...]  # column(s) holding the text (one or a pair)
    label: str
    labels: tuple[str, ...] | None  # label strings in id order; None = numeric labels as they are
    metrics: tuple[str, ...]  # the first is the one the paper reports and selects the best evaluation by
    eval_splits: tuple[str, ...] = ("dev",)
    header: tuple[str, ...] | None = None  # for files without a header row (CoLA)
    hub_eval: dict | None = None  # our split name -> hub split name, where they differ
    regression: bool = False  # a real-valued score (STS-B) instead of classes
    label_range: tuple[float, float] = (0, 1)  # numeric labels: the classes' ids, or the scores' range


SPECS = {
    "mnli": GlueSpec("MNLI", ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction"),
                     ("accuracy",), ("dev_matched", "dev_mismatched"),
                     hub_eval={"dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}),
    "sst2": GlueSpec("SST-2", ("sentence",), "label", None, ("accuracy",)),
    "mrpc": GlueSpec("MRPC", ("#1 String", "#2 String"), "Quality", None, ("accuracy", "f1")),
    "cola": GlueSpec("CoLA", ("sentence",), "label", None, ("matthews",),
                     header=("source", "label", "original_label", "sentence")),
    "qnli": GlueSpec("QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    "qqp": GlueSpec("QQP", ("question1", "question2"), "is_duplicate", None, ("accuracy", "f1")),
    "rte": GlueSpec("RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("accuracy",)),
    "stsb": GlueSpec("STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman"), regression=True,
                     label_range=(0, 5)),
}  # fmt: skip
CORRELATIONS = ("pearson", "spearman")  # undefined over fewer than two examples, or labels all equal

_HUB_TEXT = {"mnli": ("premise", "hypothesis"), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
             "cola": ("sentence",), "qnli": ("question", "sentence"), "qqp": ("question1", "question2"),
             "rte": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2")}  # fmt: skip


class GlueTask:
    """One GLUE task: its examples, its number of labels and its official metrics (see base.py)."""

    head = "seq_cls"
    greater_is_better = True

    def __init__(self, name: str, data_dir: str | None = None, hub: bool = True, max_length: int = 128):
        if name not in SPECS:
            raise TaskError(f"unknown GLUE task {name!r}; choose from {', '.join(SPECS)}")
        if not isinstance(max_length, int) or max_length < 2:
            raise TaskError(f"task.max_length must be an integer >= 2, got {max_length!r}")
        self.name, self.spec, self.hub, self.max_length = name, SPECS[name], hub, max_length
        self.dir = Path(data_dir) if data_dir else default_dir()
        self.regression = self.spec.regression
        self.num_labels = 1 if self.regression else len(self.spec.labels or (0, 1))
        self.metric = self.spec.metrics[0]
        self.eval_splits = self.spec.eval_splits
        self.min_eval_examples = 2 if set(self.spec.metrics) & set(CORRELATIONS) else 1

    def preflight(self):
        pass  # GLUE needs nothing beyond Python packages

    def check_before_training(self, eval_sets: dict[str, list[Example]]):
        """A correlation (STS-B) over fewer than two examples fails, and over equal labels is undefined: refused
        now, not after training."""
        if self.min_eval_examples < 2:
            return
        for split, items in eval_sets.items():
            labels = {e.label for e in items}
            if len(labels) < 2:
                raise TaskError(f"{self.name} {split}: {'/'.join(self.spec.metrics)} need at least 2 examples with "
                                f"different labels; its {len(items)} evaluated examples have {len(labels)}: raise "
                                "trainer.eval_limit or fix the file")  # fmt: skip

    def examples(self, split: str) -> list[Example]:
        file = self.dir / self.spec.folder / f"{split}.tsv"
        if file.exists():
            return read_tsv(file, self.spec)
        if self.hub:
            try:
                return self._from_hub(split)
            except Exception as err:  # no network, no cache: say what was looked for, once
                reason = f"the hub failed too ({type(err).__name__})"
        else:
            reason = "and task.hub=false"
        raise TaskError(
            f"GLUE {self.name} {split} not found: expected {file} ({reason}); put the released GLUE files "
            f"under {self.dir} or set task.data_dir / LORA_DATA_DIR"
        )

    def _from_hub(self, split: str) -> list[Example]:
        from datasets import load_dataset

        hub_split = {"train": "train", "dev": "validation", **(self.spec.hub_eval or {})}[split]
        rows = load_dataset("nyu-mll/glue", self.name, split=hub_split)
        cols = _HUB_TEXT[self.name]
        return [Example(r[cols[0]], r[cols[1]] if len(cols) > 1 else None, r["label"]) for r in rows]

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return glue_metrics(self.spec.metrics, predictions, labels)

    def batch(self, tokenizer, examples: list[Example], special: dict | None = None) -> dict[str, torch.Tensor]:
        enc = encode(tokenizer, examples, self.max_length, special)
        enc["labels"] = torch.tensor([e.label for e in examples])
        return enc

    def units(self, batch: dict) -> int:
        """What the loss averages over: examples."""
        return len(batch["labels"])

    def loss(self, outputs, batch: dict, label_smoothing: float) -> torch.Tensor:
        logits, labels = outputs.logits.float(), batch["labels"]
        if self.regression:  # STS-B
            return F.mse_loss(logits.squeeze(-1), labels.float())
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    @torch.no_grad()
    def predict(self, model, tokenizer, examples, device, special=None) -> list:
        """The predicted class (or score, STS-B) of each example of a batch."""
        enc = encode(tokenizer, examples, self.max_length, special)
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
        return (logits.squeeze(-1) if self.regression else logits.argmax(-1)).tolist()

    def metrics(self, outputs: list, examples) -> dict[str, float]:
        predictions = np.array(outputs, dtype=np.float32 if self.regression else np.int64)
        scores = self.score(predictions, np.array([e.label for e in examples]))
        undefined = [k for k, v in scores.items() if k in CORRELATIONS and math.isnan(v)]
        if undefined:  # the labels vary (check_before_training), so the predictions are all equal
            log.warning("%s %s undefined: the model predicts %s for all %d examples", self.name,
                        "/".join(undefined), predictions[0], len(examples))  # fmt: skip
        return scores

    def final(self, model, tokenizer, folder, device, special=None) -> dict:
        return {}  # the dev evaluations during training are GLUE's result

    def baseline(self, train: list[Example], eval_sets: dict[str, list[Example]]) -> dict[str, float]:
        """Each evaluated split's scores when every example gets the training set's most common label (the lowest
        id of a tie; STS-B: the mean score): the line a trained model has to clear. A constant has no correlation:
        0 (MCC is 0 too).

        >>> task = GlueTask("mrpc")
        >>> task.baseline([Example("a", "b", 1)] * 2 + [Example("c", "d", 0)], {"dev": [Example("e", "f", 1),
        ...                                                                       Example("g", "h", 0)]})
        {'dev/accuracy': 0.5, 'dev/f1': 0.666667}
        """
        if not train:  # evaluation only
            return {}
        labels = [e.label for e in train]
        counts = Counter(labels)
        constant = statistics.fmean(labels) if self.regression else min(counts, key=lambda y: (-counts[y], y))
        out = {}
        for split, items in eval_sets.items():
            scores = self.score(np.full(len(items), constant), np.array([e.label for e in items]))
            out.update({f"{split}/{k}": 0.0 if math.isnan(v) else v for k, v in scores.items()})
        return out


def encode(tokenizer, examples: list[Example], max_length: int, special: dict | None = None) -> dict[str, torch.Tensor]:
    """Token ids and mask of a batch; prefix methods' special tokens are placed around each input. A pair's token
    types go with it where the tokenizer gives them (BERT's segment B is type 1, as HF's run_glue feeds it; RoBERTa's
    tokenizer gives none, DeBERTa-v2's model ignores them at type_vocab_size 0)."""
    pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
    if special:
        max_length -= len(special["prefix"]) + len(special["infix"])
    enc = tokenizer([e.text_a for e in examples], pairs, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")  # fmt: skip
    ids, mask = enc["input_ids"], enc["attention_mask"]
    types = enc.get("token_type_ids") if pairs is not None else None  # a single sentence is all type 0 anyway
    if special:
        ids, mask, *rest = insert_special_tokens(ids, mask, special, tokenizer.pad_token_id, types)
        types = rest[0] if rest else None
    return {"input_ids": ids, "attention_mask": mask, **({"token_type_ids": types} if types is not None else {})}


log = logging.getLogger("lora.train")


def default_dir() -> Path:
    return data_dir() / "glue"


def read_tsv(file: Path, spec: GlueSpec) -> list[Example]:
    """Rows of a GLUE TSV file (quotes are literal text in GLUE, hence QUOTE_NONE; MRPC has a BOM)."""
    # csv refuses a field over 128 KiB by default; a long text is still a text (the tokenizer truncates it)
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(io.StringIO(read_data(file), newline=""), fieldnames=spec.header, delimiter="\t",
                            quoting=csv.QUOTE_NONE)  # fmt: skip
    try:
        rows = list(reader)
    except csv.Error as err:
        raise TaskError(f"{file} line {reader.line_num} cannot be read as TSV ({err})") from None
    if not rows:
        raise TaskError(f"{file} holds no examples")
    missing = [c for c in (*spec.text, spec.label) if c not in rows[0]]
    if missing:
        raise TaskError(f"{file} lacks the columns {missing}; found {list(rows[0])}")
    out = []
    for i, row in enumerate(rows):
        label = _label(row[spec.label], spec, file, i + 2)
        texts = [row[c] for c in spec.text]
        if any(t is None for t in texts):
            raise TaskError(f"{file} row {i + 2} has too few columns (tab-separated {', '.join(spec.text)} expected)")
        out.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
    return out


def _label(raw, spec: GlueSpec, file: Path, line: int) -> int | float:
    """A row's label, checked against the task at reading time: a label the model has no class for (SST-2's 2)
    or a score that is no number (STS-B's nan) would otherwise fail mid-training, or not at all."""
    try:
        if spec.labels:
            return spec.labels.index(raw)
        value = float(raw) if spec.regression else int(raw)
    except (ValueError, TypeError):
        raise TaskError(f"{file} row {line}: label {raw!r} is not one of {spec.labels or 'the numbers'}") from None
    lo, hi = spec.label_range
    if not (math.isfinite(value) and lo <= value <= hi):
        kind = "score" if spec.regression else "label"
        raise TaskError(f"{file} row {line}: {kind} {raw!r} is outside {spec.folder}'s range [{lo}, {hi}]")
    return value
