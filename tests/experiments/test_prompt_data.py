"""SAMSum and MNLI readers on small files in the released formats, Table 16's low-data subsets, the generated label
word, and the SAMSum ROUGE and MNLI accuracy metrics against hand-computed values and rouge-score's own scorer."""

from __future__ import annotations

import json
from collections import Counter
from statistics import fmean

import pytest
from rouge_score import rouge_scorer

from experiments.metrics.labels import accuracy
from experiments.metrics.rouge import samsum_rouge
from experiments.tasks.base import TaskError
from experiments.tasks.prompt_data import MNLI_LABELS, label_from_text, low_data_subset, read_mnli, read_samsum

# --- SAMSum ---------------------------------------------------------------------------------------------------

SAMSUM = [
    {"id": "13818513", "summary": "Amanda baked cookies and will bring Jerry some tomorrow.",
     "dialogue": "Amanda: I baked  cookies. Do you want some?\r\nJerry: Sure!\r\nAmanda: I'll bring you tomorrow :-)"},
    {"id": "13728867", "summary": "Olivia and Olivier are voting for liberals in this election. ",
     "dialogue": "Olivia: Who are you voting for in this election? \nOliver: Liberals as always."},
]  # fmt: skip


def write_samsum(folder, name="train.json", data=SAMSUM):
    (folder / name).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


@pytest.mark.parametrize(("split", "name"), [("train", "train.json"), ("dev", "val.json"), ("test", "test.json")])
def test_samsum_reads_each_split_from_its_file(tmp_path, split, name):
    write_samsum(tmp_path, name)
    rows = read_samsum(tmp_path, split)
    assert [r[0] for r in rows] == ["13818513", "13728867"]
    assert rows[0][2] == SAMSUM[0]["summary"]
    # \r\n between utterances becomes the paper's \n; the text is otherwise as released (double space kept)
    assert rows[0][1] == SAMSUM[0]["dialogue"].replace("\r\n", "\n")
    assert "\r" not in rows[0][1] and rows[0][1].count("\n") == 2
    assert rows[1][1] == SAMSUM[1]["dialogue"]


def test_samsum_missing_file_is_one_line_that_says_where_to_get_it(tmp_path):
    with pytest.raises(TaskError) as err:
        read_samsum(tmp_path, "test")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "test.json") in message and "SAMSum corpus" in message


@pytest.mark.parametrize(
    "text",
    ['{"id": "1"}', "[]", '[{"id": "1", "summary": "s"}]', '[{"id": 1, "summary": "s", "dialogue": "d"}]', "[{"],
)
def test_samsum_malformed_file_is_one_line_naming_it(tmp_path, text):
    (tmp_path / "val.json").write_text(text, encoding="utf-8")
    with pytest.raises(TaskError) as err:
        read_samsum(tmp_path, "dev")
    assert "\n" not in str(err.value) and str(tmp_path / "val.json") in str(err.value)


def test_samsum_unknown_split_is_refused(tmp_path):
    with pytest.raises(TaskError, match="no split 'validation'"):
        read_samsum(tmp_path, "validation")


# --- MNLI -----------------------------------------------------------------------------------------------------

TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]  # fmt: skip
DEV_HEADER = [*TRAIN_HEADER[:11], "label2", "label3", "label4", "label5", "gold_label"]
PAIRS = [
    ("Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work. ", "neutral"),
    ('you know during the season and i guess at at your level uh you lose them "to the next level"',
     "You lose the things to the following level if the people recall.", "entailment"),
    ("One of our number will carry out your instructions minutely.",
     "A member of my team will execute your orders with immense precision.", "contradiction"),
]  # fmt: skip


def write_glue(folder, split, pairs=PAIRS):
    header = TRAIN_HEADER if split == "train" else DEV_HEADER
    lines = ["\t".join(header)]
    for i, (s1, s2, gold) in enumerate(pairs):
        labels = [gold] * (len(header) - 10)  # label1 [.. label5] and gold_label
        lines.append("\t".join([str(i), "31193", f"31193{gold[0]}", "government", "( ( x ) )", "( ( y ) )",
                                "(ROOT (S x))", "(ROOT (S y))", s1, s2, *labels]))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_multinli(folder, split, pairs):
    rows = [{"annotator_labels": [gold], "genre": "government", "gold_label": gold, "pairID": f"{i}n",
             "promptID": str(i), "sentence1": s1, "sentence1_binary_parse": "( x )", "sentence1_parse": "(ROOT x)",
             "sentence2": s2, "sentence2_binary_parse": "( y )", "sentence2_parse": "(ROOT y)"}
            for i, (s1, s2, gold) in enumerate(pairs)]  # fmt: skip
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / f"multinli_1.0_{split}.jsonl").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("split", ["train", "dev_matched"])
@pytest.mark.parametrize("inner", [True, False])
def test_mnli_reads_glue_tsv_from_the_mnli_folder_or_the_one_above(tmp_path, split, inner):
    write_glue(tmp_path / "MNLI" if inner else tmp_path, split)
    rows = read_mnli(tmp_path, split)
    assert rows == PAIRS  # quotes are literal text in GLUE; trailing spaces kept as released


def test_mnli_dev_means_dev_matched(tmp_path):
    write_glue(tmp_path, "dev_matched")
    assert read_mnli(tmp_path, "dev") == read_mnli(tmp_path, "dev_matched") == PAIRS


def test_mnli_reads_multinli_jsonl_and_drops_no_consensus_pairs(tmp_path):
    no_consensus = ("The new rights are nice enough", "Everyone really likes the newest benefits ", "-")
    write_multinli(tmp_path, "dev_matched", [PAIRS[0], no_consensus, PAIRS[1], PAIRS[2]])
    assert read_mnli(tmp_path, "dev") == PAIRS


def test_mnli_prefers_glue_when_both_layouts_are_present(tmp_path):
    write_glue(tmp_path, "train", PAIRS[:1])
    write_multinli(tmp_path, "train", PAIRS)
    assert read_mnli(tmp_path, "train") == PAIRS[:1]


def test_mnli_missing_files_are_one_line_naming_both(tmp_path):
    with pytest.raises(TaskError) as err:
        read_mnli(tmp_path, "train")
    message = str(err.value)
    assert "\n" not in message and "train.tsv" in message and "multinli_1.0_train.jsonl" in message
    assert "GLUE" in message and "MultiNLI" in message


@pytest.mark.parametrize(
    ("line", "what"),
    [("{not json", "not valid JSON at line 2"), ('{"sentence1": "a", "gold_label": "neutral"}', "line 2 lacks"),
     ('{"sentence1": "a", "sentence2": "b", "gold_label": "unknown"}', "gold_label 'unknown'")],
)  # fmt: skip
def test_mnli_malformed_jsonl_is_one_line_naming_file_and_line(tmp_path, line, what):
    write_multinli(tmp_path, "train", PAIRS[:1])
    file = tmp_path / "multinli_1.0_train.jsonl"
    file.write_text(file.read_text() + line + "\n")
    with pytest.raises(TaskError) as err:
        read_mnli(tmp_path, "train")
    assert "\n" not in str(err.value) and str(file) in str(err.value) and what in str(err.value)


def test_mnli_glue_label_outside_the_three_is_refused(tmp_path):
    write_glue(tmp_path, "train", [("a", "b", "-")])
    with pytest.raises(TaskError, match="label '-'"):
        read_mnli(tmp_path, "train")


# --- low-data subsets -----------------------------------------------------------------------------------------


def labelled(counts: dict[str, int]) -> list[tuple[str, str, str]]:
    """Examples interleaved across classes, each one distinct."""
    return [(f"p{i}{c}", f"h{i}{c}", c) for i in range(max(counts.values())) for c, k in counts.items() if i < k]


def test_subset_is_class_balanced_with_the_remainder_in_sorted_class_order():
    data = labelled({"neutral": 50, "entailment": 50, "contradiction": 50})
    # 100 = 3 * 33 + 1: the one left over goes to the first class in sorted order, "contradiction"
    assert Counter(e[2] for e in low_data_subset(data, 100, seed=0)) == {"contradiction": 34, "entailment": 33,
                                                                          "neutral": 33}  # fmt: skip
    # 11 = 3 * 3 + 2: contradiction and entailment get 4, neutral 3
    assert Counter(e[2] for e in low_data_subset(data, 11, seed=5)) == {"contradiction": 4, "entailment": 4,
                                                                         "neutral": 3}  # fmt: skip


def test_subset_is_deterministic_without_replacement_and_in_data_order():
    data = labelled({"entailment": 40, "neutral": 40, "contradiction": 40})
    first = low_data_subset(data, 30, seed=3)
    assert first == low_data_subset(list(data), 30, seed=3)  # the same examples, the same order
    assert len(set(first)) == 30  # no example twice
    positions = [data.index(e) for e in first]
    assert positions == sorted(positions)


def test_subsets_of_one_seed_are_nested_and_seeds_differ():
    data = labelled({"entailment": 60, "neutral": 60, "contradiction": 60})
    small, large = low_data_subset(data, 12, seed=1), low_data_subset(data, 60, seed=1)
    assert set(small) <= set(large)
    assert set(low_data_subset(data, 12, seed=2)) != set(small)


def test_subset_uses_the_label_function():
    data = [{"y": y, "i": i} for i, y in enumerate([0, 1] * 10)]
    subset = low_data_subset(data, 6, seed=0, label=lambda e: e["y"])
    assert Counter(e["y"] for e in subset) == {0: 3, 1: 3}


def test_subset_refuses_what_it_cannot_draw():
    data = labelled({"entailment": 5, "neutral": 5, "contradiction": 1})
    with pytest.raises(ValueError) as err:
        low_data_subset(data, 12, seed=0)
    assert "\n" not in str(err.value) and "12" in str(err.value) and "11" in str(err.value)
    with pytest.raises(ValueError, match="'contradiction' has 1"):  # 9 balanced needs 3 of each
        low_data_subset(data, 9, seed=0)
    with pytest.raises(ValueError, match="n >= 1"):
        low_data_subset(data, 0, seed=0)


# --- the generated label word ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [("entailment", "entailment"), (" Neutral", "neutral"), ("CONTRADICTION.", "contradiction"),
     ("entailment, because the premise says so", "entailment"), ("'neutral'\nmore text", "neutral"),
     ("The answer is entailment", None), ("entail", None), ("not_entailment", None), ("", None), ("   \n", None),
     ("neutral-ish", None)],
)  # fmt: skip
def test_label_from_text(text, label):
    assert label_from_text(text) == label
    assert label is None or label in MNLI_LABELS


# --- ROUGE ----------------------------------------------------------------------------------------------------


def test_rouge_of_identical_text_is_one():
    texts = ["Amanda baked cookies and will bring Jerry some tomorrow.", "Olivia votes for liberals."]
    assert samsum_rouge(texts, texts) == {"ROUGE-1": 1.0, "ROUGE-2": 1.0, "ROUGE-L": 1.0}


def test_rouge_hand_computed_overlap():
    # unigrams: 5 of 6 match both ways -> F1 5/6; bigrams: the-cat, on-the, the-mat of 5 -> 3/5; LCS 5 of 6 -> 5/6
    scores = samsum_rouge(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert scores == pytest.approx({"ROUGE-1": 5 / 6, "ROUGE-2": 3 / 5, "ROUGE-L": 5 / 6})
    # a short prediction: unigram P 2/2, R 2/4 -> F1 2/3; bigram P 1/1, R 1/3 -> F1 1/2; LCS 2 -> F1 2/3
    scores = samsum_rouge(["The cat!"], ["the cat sat down"])
    assert scores == pytest.approx({"ROUGE-1": 2 / 3, "ROUGE-2": 1 / 2, "ROUGE-L": 2 / 3})


def test_rouge_stemmer_matches_word_forms():
    assert samsum_rouge(["running"], ["runs"])["ROUGE-1"] == 1.0  # both "run"
    assert samsum_rouge(["running"], ["runs"], use_stemmer=False)["ROUGE-1"] == 0.0
    # "police killed the gunman" / "police kill the gunman": 3 of 4 unigrams and 1 of 3 bigrams unstemmed
    plain = samsum_rouge(["police killed the gunman"], ["police kill the gunman"], use_stemmer=False)
    assert plain == pytest.approx({"ROUGE-1": 3 / 4, "ROUGE-2": 1 / 3, "ROUGE-L": 3 / 4})
    assert samsum_rouge(["police killed the gunman"], ["police kill the gunman"])["ROUGE-2"] == 1.0


def test_rouge_l_sum_splits_sentences_at_newlines():
    prediction, reference = "the dog ran\nthe cat sat", "the cat sat\nthe dog ran"
    # one sequence: the longest common subsequence is 3 of 6 tokens; per sentence every token is matched
    assert samsum_rouge([prediction], [reference])["ROUGE-L"] == pytest.approx(0.5)
    assert samsum_rouge([prediction], [reference], rouge_l="rougeLsum")["ROUGE-L"] == pytest.approx(1.0)


def test_rouge_empty_prediction_scores_zero_and_mean_is_per_example():
    scores = samsum_rouge(["", "Jerry wants cookies"], ["Jerry wants cookies", "Jerry wants cookies"])
    assert scores == {"ROUGE-1": 0.5, "ROUGE-2": 0.5, "ROUGE-L": 0.5}


PAIRS_ROUGE = [
    ("Amanda will bring Jerry cookies tomorrow.", "Amanda baked cookies and will bring Jerry some tomorrow."),
    ("Olivia and Oliver vote liberal.", "Olivia and Olivier are voting for liberals in this election."),
    ("Tim is running late; he'll be there at 7.", "Tim is late and will arrive at 7 pm."),
    ("Kim hates mondays", "Kim is in a bad mood because it's Monday. She wants to stay in bed."),
]


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_agrees_with_rouge_score(use_stemmer):
    predictions, references = [p for p, _ in PAIRS_ROUGE], [r for _, r in PAIRS_ROUGE]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)
    official = [scorer.score(r, p) for p, r in PAIRS_ROUGE]
    expected = {name: fmean(s[t].fmeasure for s in official)
                for name, t in [("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL")]}  # fmt: skip
    assert samsum_rouge(predictions, references, use_stemmer=use_stemmer) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected["ROUGE-2"] < expected["ROUGE-1"] < 1  # the pairs are neither trivial nor disjoint


def test_rouge_bootstrap_estimates_the_mean():
    predictions, references = [p for p, _ in PAIRS_ROUGE] * 25, [r for _, r in PAIRS_ROUGE] * 25
    mean, boot = samsum_rouge(predictions, references), samsum_rouge(predictions, references, aggregate="bootstrap")
    assert boot == pytest.approx(mean, abs=0.03)


def test_rouge_refuses_bad_input():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        samsum_rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        samsum_rouge([], [])
    with pytest.raises(ValueError, match="rougeLsum"):
        samsum_rouge(["a"], ["a"], rouge_l="rougeLSum")


# --- accuracy -------------------------------------------------------------------------------------------------


def test_accuracy_counts_none_as_wrong():
    predicted = ["entailment", None, "neutral", "contradiction", "neutral"]
    gold = ["entailment", "neutral", "neutral", "entailment", "neutral"]
    assert accuracy(predicted, gold) == 3 / 5
    assert accuracy([label_from_text(t) for t in ["Entailment.", "maybe"]], ["entailment", "neutral"]) == 0.5


def test_accuracy_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="1 predicted labels but 2 gold"):
        accuracy(["neutral"], ["neutral", "entailment"])
    with pytest.raises(ValueError, match="no labels"):
        accuracy([], [])
