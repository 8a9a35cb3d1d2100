"""Data-to-text generation (the paper's Section 5.4): E2E, WebNLG 2017 and DART as conditional language modelling.

A training sequence is  [prefix] context separator [infix] completion <eos>  (the special tokens only for the
prefix methods); the loss covers the completion and the end-of-sequence token only.

`format: released` (the default) is microsoft/LoRA's pipeline, the one behind the paper's numbers: its data files
(E2E `mr||ref` lines with PTB-tokenised references, WebNLG/DART JSON; built by `nlg_released` from the official
files where the bundle lacks them, as for E2E's training split), the end-of-text token as separator, a space
before the completion, the completion as written (no strip), only `good` WebNLG texts in every split, the loss
summed over completion tokens divided by their count + 1e-4 (its `model.py`), and WebNLG/DART outputs and
references lower-cased and split at non-word characters before scoring (its `gpt2_decode.py --tokenize --lower`).
`format: official` reads the official releases (CSV, XML) and puts `separator` between input and text.

During training the dev loss is tracked; when training ends, the test inputs are decoded with beam search (each
distinct input once) and scored with the official metrics (`experiments.metrics`). Files come from
`task.data_dir` (default `$LORA_DATA_DIR/<task>`), or from the hub when absent (`hub: true`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lora.files import write_text
from lora.model import max_positions

from ..metrics import require_java, score
from ..paths import data_dir as default_data_dir
from .base import TaskError
from .generation import DEFAULTS, decoding_settings, generate
from .nlg_files import Record, read_dart, read_e2e, read_e2e_text, read_webnlg
from .nlg_released import RELEASED_TOKENIZER, e2e_text


@dataclass(frozen=True)
class Pair:
    """One training (or dev-loss) sequence: an input and one of its references."""

    context: str
    completion: str


@dataclass(frozen=True)
class NLGSpec:
    reader: object
    official: dict[str, str]  # split -> file or folder under the task's folder, the official release
    released: dict[str, str] = field(default_factory=dict)  # split -> microsoft/LoRA's preprocessed copy
    hub: tuple[str, str | None] | None = None  # (dataset id, config) on the hub


_WEBNLG = "webnlg_challenge_2017"
SPECS = {
    "e2e": NLGSpec(read_e2e, {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"},
                   {"dev": "lora-format/valid.txt", "test": "lora-format/test.txt"}, ("GEM/e2e_nlg", None)),
    "webnlg": NLGSpec(read_webnlg, {"train": f"{_WEBNLG}/train", "dev": f"{_WEBNLG}/dev",
                                    "test": f"{_WEBNLG}/test/testdata_with_lex.xml"},
                      {s: f"lora-format/{s}.json" for s in ("train", "dev", "test")}, ("GEM/web_nlg", "en")),
    "dart": NLGSpec(read_dart, {"train": "dart-v1.1.1-full-train.json", "dev": "dart-v1.1.1-full-dev.json",
                                "test": "dart-v1.1.1-full-test.xml"}, {}, ("GEM/dart", None)),
}  # fmt: skip

_MISSING_HINT = {
    ("dart", "train"): " (DART's training file is over 4 MiB and is not in the offline bundle; "
    "`trainer.max_steps=0` still decodes and scores dev/test with the untrained model)",
}


class NLGTask:
    """One NLG data set: pairs to train on, records (inputs with grouped references) to decode and score."""

    head = "causal_lm"
    num_labels = None
    regression = False
    metric = "loss"  # dev loss during training; the test scores come from decoding at the end
    greater_is_better = False
    eval_splits = ("dev",)

    def __init__(self, name: str, data_dir: str | None = None, format: str = "released", hub: bool = True,
                 max_length: int = 256, separator: str = "\n", good_only: bool = True, decode_split: str = "test",
                 decode_limit: int | None = None, decoding: dict | None = None):  # fmt: skip
        if name not in SPECS:
            raise TaskError(f"unknown NLG task {name!r}; choose from {', '.join(SPECS)}")
        if format not in ("official", "released"):
            raise TaskError(f"task.format must be released or official, got {format!r}")
        self.name, self.spec, self.format, self.hub = name, SPECS[name], format, hub
        self.dir = Path(data_dir) if data_dir else default_data_dir() / name
        self.max_length, self.separator, self.good_only = max_length, separator, good_only
        splits = {**self.spec.official, **self.spec.released}
        if decode_split not in splits:
            raise TaskError(f"task.decode_split must be one of {', '.join(splits)}, got {decode_split!r}")
        if decode_limit is not None and (not isinstance(decode_limit, int) or decode_limit < 1):
            raise TaskError(f"task.decode_limit must be an integer >= 1 or null, got {decode_limit!r}")
        if not isinstance(max_length, int) or max_length < 2:
            raise TaskError(f"task.max_length must be an integer >= 2, got {max_length!r}")
        self.decode_split, self.decode_limit = decode_split, decode_limit
        decoding_settings(decoding)  # refused now, not after training
        self.decoding = dict(decoding or {})

    def preflight(self):
        """Refuse at once what would only fail after training: METEOR needs Java."""
        require_java()

    def check_before_training(self, eval_sets: dict[str, list]):
        """The decode split, read only when training ends, is read now: a bad file is refused before training."""
        self.records(self.decode_split)

    # --- data ------------------------------------------------------------------------------------------------

    def records(self, split: str) -> list[Record]:
        """The distinct inputs of a split, each with all its references, in file order."""
        files = {**self.spec.official, **(self.spec.released if self.released else {})}
        if split not in files:
            raise TaskError(f"{self.name} has no split {split!r}; splits: {', '.join(files)}")
        path = self.dir / files[split]
        if self.released and not path.exists() and split in self.spec.official:
            path = self.dir / self.spec.official[split]  # converted as the released files were made
        if path.exists():
            return self._read(path, split)
        reason = "and task.hub=false"
        if self.hub:
            try:
                return hub_records(self.name, split)
            except Exception as err:  # no network, no cache: say what was looked for, once
                reason = f"the hub's {self.spec.hub[0]} failed too ({type(err).__name__})"
        hint = _MISSING_HINT.get((self.name, split), "")
        raise TaskError(
            f"{self.name} {split} not found: expected {path} ({reason}){hint}; put the released files under "
            f"{self.dir} or set task.data_dir / LORA_DATA_DIR"
        )

    @property
    def released(self) -> bool:
        return self.format == "released"

    def _read(self, path: Path, split: str) -> list[Record]:
        if self.released and self.name == "e2e" and path.suffix == ".csv":
            # train.txt is not in the bundle, so which tool tokenised it is unknown: valid.txt's (Moses) for it
            return read_e2e_text(e2e_text(path, RELEASED_TOKENIZER.get(path.name, "moses")), path)
        if self.name == "webnlg":
            return self.spec.reader(path, good_only=self.good_only and (split == "train" or self.released))
        return self.spec.reader(path)

    def examples(self, split: str) -> list[Pair]:
        """Training (and dev-loss) sequences: one per (input, reference)."""
        return [Pair(r.context, ref) for r in self.records(split) for ref in r.references]

    # --- training ---------------------------------------------------------------------------------------------

    def tokens(self, tokenizer, pair: Pair, special: dict | None) -> tuple[list[int], int]:
        """Ids of one sequence and the length of its conditioning part (which carries no loss)."""
        context = self.context_ids(tokenizer, pair.context, special)
        if self.released:  # gpt2_encode.py: a space, then the completion as the file has it
            completion = tokenizer.encode(" " + pair.completion, add_special_tokens=False)
        else:
            lead = "" if self.separator[-1:].isspace() else " "  # word-initial tokens, as in running text
            completion = tokenizer.encode(lead + pair.completion.strip(), add_special_tokens=False)
        ids = (context + completion)[: self.max_length - 1] + [tokenizer.eos_token_id]
        return ids, min(len(context), len(ids) - 1)

    def context_ids(self, tokenizer, context: str, special: dict | None, limit: int | None = None) -> list[int]:
        """Ids of [prefix] context separator [infix]; a context over `limit` tokens loses its tail, not the
        separator, so that a completion always has room."""
        if self.released:  # gpt2_encode.py --add_bos: the context as written, then the end-of-text token
            ids = tokenizer.encode(context, add_special_tokens=False) + [tokenizer.eos_token_id]
            tail = 1
        else:
            ids = tokenizer.encode(context.strip() + self.separator, add_special_tokens=False)
            tail = len(tokenizer.encode(self.separator, add_special_tokens=False))
        if limit is not None and len(ids) > limit:
            ids = ids[: max(limit - tail, 1)] + ids[-tail:]
        if special:
            ids = special["prefix"] + ids + special["infix"]
        return ids

    def batch(self, tokenizer, pairs: list[Pair], special: dict | None = None) -> dict[str, torch.Tensor]:
        rows = [self.tokens(tokenizer, p, special) for p in pairs]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (ids, start) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
            # Positions come from the mask, never from the pad id: SmolLM2's pad is its end-of-sequence token.
            labels[i, start : len(ids)] = input_ids[i, start : len(ids)]
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}

    def units(self, batch: dict) -> int:
        """What the loss averages over: the completion tokens it predicts."""
        return int((batch["labels"][:, 1:] != -100).sum())

    def loss(self, outputs, batch: dict, label_smoothing: float) -> torch.Tensor:
        """Mean cross entropy over completion tokens (label smoothing as in the paper's Table 11)."""
        logits = outputs.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        if not self.released:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                   label_smoothing=label_smoothing)  # fmt: skip
        summed = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                 label_smoothing=label_smoothing, reduction="sum")  # fmt: skip
        return summed / ((labels != -100).sum() + 1e-4)  # model.py's normaliser

    @torch.no_grad()
    def predict(self, model, tokenizer, pairs: list[Pair], device, special=None) -> list[tuple[float, int]]:
        """(summed loss, completion tokens) of each pair of a batch."""
        batch = {k: v.to(device) for k, v in self.batch(tokenizer, pairs, special).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        losses = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        return list(zip(losses.sum(1).tolist(), (labels != -100).sum(1).tolist(), strict=True))

    def metrics(self, outputs: list[tuple[float, int]], pairs: list[Pair]) -> dict[str, float]:
        """Dev loss per completion token (and its perplexity), weighting every token equally."""
        loss = sum(total for total, _ in outputs) / max(sum(count for _, count in outputs), 1)
        return {"loss": round(loss, 6), "perplexity": round(float(torch.tensor(loss).exp()), 4)}

    # --- the finished model -------------------------------------------------------------------------------------

    def baseline(self, train, eval_sets) -> dict[str, float]:
        return {}  # no constant text to score: the untrained model's dev loss is the line to clear

    def final(self, model, tokenizer, folder: Path, device, special=None) -> dict:
        """Decode the test inputs, write predictions and references into `folder`, score them."""
        records = self.records(self.decode_split)[: self.decode_limit]
        texts = self.decode(model, tokenizer, records, device, special)
        records = [Record(r.context, tuple(ref.strip() for ref in r.references), r.category, r.seen) for r in records]
        if self.released and self.name in ("webnlg", "dart"):  # gpt2_decode.py --tokenize --lower
            texts = [released_words(t) for t in texts]
            records = [Record(r.context, tuple(map(released_words, r.references)), r.category, r.seen)
                       for r in records]  # fmt: skip
        write_text("".join(t + "\n" for t in texts), folder / f"{self.decode_split}.txt")
        write_text(references_text(records), folder / f"{self.decode_split}-references.txt")
        scores = {"all": score(self.name, [list(r.references) for r in records], texts)}
        if any(r.seen is not None for r in records):  # WebNLG reports seen and unseen categories apart
            for part, seen in (("seen", True), ("unseen", False)):
                idx = [i for i, r in enumerate(records) if r.seen is seen]
                if idx:
                    scores[part] = score(self.name, [list(records[i].references) for i in idx],
                                         [texts[i] for i in idx])  # fmt: skip
        result = {f"{self.decode_split}/{k}": round(v, 6) for k, v in scores.pop("all").items()}
        result |= {f"{self.decode_split}_{part}/{k}": round(v, 6) for part, d in scores.items() for k, v in d.items()}
        return {"test": result, "decoded_inputs": len(records)}

    def decode(self, model, tokenizer, records: list[Record], device, special=None) -> list[str]:
        """The generated text of every record's context, each cut to leave room for `max_new_tokens`."""
        room = max_positions(model.config) - self.decoding.get("max_new_tokens", DEFAULTS["max_new_tokens"])
        room -= len(special["prefix"]) + len(special["infix"]) if special else 0
        contexts = [self.context_ids(tokenizer, r.context, special, limit=room) for r in records]
        return generate(model, tokenizer, contexts, self.decoding, device, desc=f"decode {self.name}")


def released_words(text: str) -> str:
    """Lower case, split at every non-word character, single spaces: gpt2_decode.py's `--tokenize --lower`.

    >>> released_words("Aarhus Airport's runway-length is 2,776.0 .")
    "aarhus airport ' s runway - length is 2 , 776 . 0 ."
    """
    return " ".join(" ".join(re.split(r"(\W)", text.lower())).split())


def references_text(records: list[Record]) -> str:
    """The official scripts' plain-text reference form: one input's references on consecutive lines, then a
    blank line (references are single lines in every released file).

    >>> references_text([Record("a", ("x", "y")), Record("b", ("z",))])
    'x\\ny\\n\\nz\\n\\n'
    """
    return "".join("".join(ref + "\n" for ref in r.references) + "\n" for r in records)


# The hub's copies (GEM's, field names from their dataset cards), for machines with network access.
_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def hub_records(name: str, split: str) -> list[Record]:
    """Records of a split from the hub, grouped by input like the file readers."""
    from datasets import load_dataset

    dataset, config = SPECS[name].hub
    rows = load_dataset(dataset, config, split=_HUB_SPLITS[split])
    groups: dict[str, list[str]] = {}
    for row in rows:
        if name == "e2e":
            context = row["meaning_representation"]
        elif name == "webnlg":
            context = " | ".join(" : ".join(t.split(" | ")) for t in row["input"])
        else:
            context = " | ".join(f"{s} : {p.lower()} : {o}" for s, p, o in row["tripleset"])
        refs = groups.setdefault(context, [])
        refs.extend(r for r in (row.get("references") or [row["target"]]) if r not in refs)
    return [Record(c, tuple(refs)) for c, refs in groups.items()]
