"""The paper's GPT-3 tasks posed to a decoder as generation from a prompt (its Section 5.5 and Tables 4, 5, 6, 15
and 16): WikiSQL (a question about a table to SQL), SAMSum (a dialogue to its summary) and MNLI-matched (a premise
and hypothesis to the label word).

A training sequence is  prompt completion <eos>, the loss on the completion only: `NLGTask`'s sequences, loss
and dev loss (its `official` format, with no separator: every prompt ends with its cue, "SQL:", "Summary:",
"Answer:"). During training the dev loss is tracked; when training ends the decode split is decoded (greedy by
default, `task.decoding`) and scored with the task's official metric: WikiSQL logical-form and execution accuracy
(`experiments.metrics.wikisql`), SAMSum ROUGE-1/2/L (`experiments.metrics.rouge`), MNLI-m accuracy of the
generated label word (`experiments.metrics.labels`). microsoft/LoRA released no code for these tasks and the
paper prints no prompt: the prompts below are ours, one line each, and a run folder's config names the task.

`task.train_size` (MNLI only) trains on Table 16's low-data subsets: 100, 1,000 or 10,000 examples, class-balanced
and fixed by `task.subset_seed` (`prompt_data.low_data_subset`). None of these data sets is in the offline bundle:
a missing file is one line that says where to get it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lora.files import write_text

from ..metrics.labels import accuracy
from ..metrics.rouge import samsum_rouge
from ..metrics.wikisql import wikisql_scores
from ..paths import data_dir as default_data_dir
from .base import TaskError
from .generation import decoding_settings
from .nlg import NLGTask, Pair
from .nlg_files import Record
from .prompt_data import MNLI_LABELS, label_from_text, low_data_subset, read_mnli, read_samsum
from .wikisql_data import read_wikisql, sql_to_text, text_to_sql


def _wikisql_prompt(ex) -> str:
    return f"Table columns: {' | '.join(ex.header)}\nQuestion: {ex.question}\nSQL:"


def _wikisql_score(texts: list[str], examples: list) -> dict:
    predicted = [text_to_sql(t, ex.header) for t, ex in zip(texts, examples, strict=True)]
    return wikisql_scores(predicted, [ex.sql for ex in examples], examples)


def _samsum_prompt(ex) -> str:
    return f"Dialogue:\n{ex[1]}\nSummary:"


def _mnli_prompt(ex) -> str:
    return f"Premise: {ex[0]}\nHypothesis: {ex[1]}\nDoes the premise entail the hypothesis? Answer:"


def _choices(score: Callable, *names: str) -> dict[str, tuple]:
    """The values each named setting of a metric function takes, from its annotations (a switch or a Literal),
    so that `task.scoring` is checked when the task is built, not after training."""
    hints = typing.get_type_hints(score)
    return {n: (True, False) if hints[n] is bool else typing.get_args(hints[n]) for n in names}


def _yaml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class PromptSpec:
    read: Callable[[Path, str], list]  # (folder, split) -> the split's examples, as the reader returns them
    prompt: Callable[[object], str]
    target: Callable[[object], str]
    score: Callable[..., dict]  # (generated texts, examples, **task.scoring) -> metric -> value
    splits: tuple[str, ...]
    choices: dict[str, tuple] = field(default_factory=dict)  # `task.scoring`'s settings and their values (SAMSum's)


SPECS = {
    "wikisql": PromptSpec(read_wikisql, _wikisql_prompt, lambda ex: sql_to_text(ex.sql, ex.header), _wikisql_score,
                          ("train", "dev", "test")),
    "samsum": PromptSpec(read_samsum, _samsum_prompt, lambda ex: ex[2],
                         lambda texts, exs, **choices: samsum_rouge(texts, [ex[2] for ex in exs], **choices),
                         ("train", "dev", "test"), _choices(samsum_rouge, "use_stemmer", "rouge_l", "aggregate")),
    "mnli_gen": PromptSpec(read_mnli, _mnli_prompt, lambda ex: ex[2],
                           lambda texts, exs: {"accuracy": accuracy([label_from_text(t) for t in texts],
                                                                    [ex[2] for ex in exs])}, ("train", "dev")),
}  # fmt: skip
_FOLDERS = {"wikisql": "wikisql", "samsum": "samsum", "mnli_gen": "glue/MNLI"}  # under $LORA_DATA_DIR


class PromptTask(NLGTask):
    """One of SPECS: NLGTask's sequences and dev loss over (prompt, target) pairs, its own data and scores."""

    def __init__(self, name: str, data_dir: str | None = None, max_length: int = 384, train_size: int | None = None,
                 subset_seed: int = 0, decode_split: str = "dev", decode_limit: int | None = None,
                 decoding: dict | None = None, scoring: dict | None = None):  # fmt: skip
        if name not in SPECS:
            raise TaskError(f"unknown prompt task {name!r}; choose from {', '.join(SPECS)}")
        self.name, self.prompt_spec = name, SPECS[name]
        self.dir = Path(data_dir) if data_dir else default_data_dir() / _FOLDERS[name]
        if not isinstance(max_length, int) or max_length < 2:
            raise TaskError(f"task.max_length must be an integer >= 2, got {max_length!r}")
        if train_size is not None and (name != "mnli_gen" or not isinstance(train_size, int) or train_size < 1):
            raise TaskError(f"task.train_size (Table 16's low-data subsets) is an integer >= 1 for mnli_gen only, "
                            f"got {train_size!r} for {name}")  # fmt: skip
        if decode_split not in self.prompt_spec.splits:
            raise TaskError(f"task.decode_split must be one of {', '.join(self.prompt_spec.splits)}, "
                            f"got {decode_split!r}")  # fmt: skip
        if decode_limit is not None and (not isinstance(decode_limit, int) or decode_limit < 1):
            raise TaskError(f"task.decode_limit must be an integer >= 1 or null, got {decode_limit!r}")
        decoding_settings(decoding)  # refused now, not after training
        unknown = sorted(set(scoring or {}) - set(self.prompt_spec.choices))
        if unknown:
            raise TaskError(f"task.scoring has no {', '.join(unknown)} for {name}; it takes "
                            f"{', '.join(self.prompt_spec.choices) or 'nothing'}")  # fmt: skip
        for key, value in (scoring or {}).items():
            allowed = self.prompt_spec.choices[key]
            if type(value) is not type(allowed[0]) or value not in allowed:  # exact: 1 is not true
                raise TaskError(f"task.scoring.{key} must be one of {', '.join(map(_yaml, allowed))}, got {value!r}")
        self.scoring = dict(scoring or {})
        # NLGTask's sequence machinery, official format: prompt (ending with its cue), a space, the target
        self.format, self.separator, self.hub, self.good_only = "official", "", False, False
        self.max_length, self.train_size, self.subset_seed = max_length, train_size, subset_seed
        self.decode_split, self.decode_limit, self.decoding = decode_split, decode_limit, dict(decoding or {})
        self._read_cache: dict[str, list] = {}

    def preflight(self):
        """Nothing to check before training (no metric here needs Java)."""

    def raw(self, split: str) -> list:
        """The split's examples as the reader gives them; the training split cut to `train_size` if set."""
        if split not in self.prompt_spec.splits:
            raise TaskError(f"{self.name} has no split {split!r}; splits: {', '.join(self.prompt_spec.splits)}")
        if split not in self._read_cache:
            found = self.prompt_spec.read(self.dir, split)
            if split == "train" and self.train_size is not None:
                found = low_data_subset(found, self.train_size, self.subset_seed, label=lambda ex: ex[2])
            self._read_cache[split] = found
        return self._read_cache[split]

    def records(self, split: str) -> list[Record]:
        return [Record(self.prompt_spec.prompt(ex), (self.prompt_spec.target(ex),)) for ex in self.raw(split)]

    def examples(self, split: str) -> list[Pair]:
        return [Pair(r.context, r.references[0]) for r in self.records(split)]

    def final(self, model, tokenizer, folder: Path, device, special=None) -> dict:
        """Decode the decode split's prompts, write the outputs and targets into `folder`, score them."""
        examples = self.raw(self.decode_split)[: self.decode_limit]
        records = self.records(self.decode_split)[: self.decode_limit]
        texts = self.decode(model, tokenizer, records, device, special)
        write_text("".join(t + "\n" for t in texts), folder / f"{self.decode_split}.txt")
        write_text("".join(r.references[0] + "\n" for r in records), folder / f"{self.decode_split}-targets.txt")
        scores = self.prompt_spec.score(texts, examples, **self.scoring)
        return {"test": {f"{self.decode_split}/{k}": round(v, 6) for k, v in scores.items()},
                "decoded_inputs": len(records)}  # fmt: skip


__all__ = ["MNLI_LABELS", "SPECS", "PromptTask"]
