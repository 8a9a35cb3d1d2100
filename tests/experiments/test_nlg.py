"""The NLG pipeline: sequences and their loss mask, decoding (unique inputs, merged = unmerged), a tiny
train-decode-score run per data set, evaluation-only runs, the hub fallback and the paper's Table 11 files."""

import json
from pathlib import Path

import pytest
import torch
from conftest import randomize_lora
from omegaconf import OmegaConf

import lora
from experiments.cli import compose
from experiments.models import CharTokenizer, build
from experiments.paths import data_dir
from experiments.tasks import NLGTask, TaskError
from experiments.tasks.generation import generate
from experiments.tasks.nlg import Pair, Record, hub_records
from experiments.train import run
from lora.files import read_safetensors


def needs(*files: str):
    missing = [f for f in files if not (data_dir() / f).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"data files absent: {missing} (set LORA_DATA_DIR)")


@pytest.fixture
def task():
    return NLGTask("e2e", format="official", separator=" =", max_length=64)


def test_only_the_completion_and_end_of_sequence_carry_loss(task):
    tok = CharTokenizer(128)
    tok.pad_token_id = tok.eos_token_id  # as SmolLM2: padding must come from the mask, not the pad id
    b = task.batch(tok, [Pair("ab", "xy"), Pair("abcd", "z")])
    ids, mask, labels = b["input_ids"], b["attention_mask"], b["labels"]
    context = len(tok.encode("ab =", add_special_tokens=False))
    row0 = ids[0, : int(mask[0].sum())].tolist()
    assert row0 == tok.encode("ab = xy", add_special_tokens=False) + [tok.eos_token_id]
    assert labels[0].tolist() == [-100] * context + row0[context:] + [-100] * (ids.shape[1] - len(row0))
    assert labels[1, -1] == tok.eos_token_id  # the longest row's end-of-sequence is learned, though pad == eos


def test_loss_is_the_mean_cross_entropy_over_completion_tokens(task):
    tok = CharTokenizer(128)
    b = task.batch(tok, [Pair("ab", "xy"), Pair("abcd", "z")])
    logits = torch.randn(*b["input_ids"].shape, 128)
    out = type("Out", (), {"logits": logits})
    manual = [
        -torch.log_softmax(logits[i, t - 1], -1)[b["labels"][i, t]]
        for i in range(2)
        for t in range(1, logits.shape[1])
        if b["labels"][i, t] != -100
    ]
    assert torch.allclose(task.loss(out, b, 0.0), torch.stack(manual).mean())
    smoothed = task.loss(out, b, 0.1)
    assert not torch.allclose(smoothed, torch.stack(manual).mean())


def test_prefix_methods_get_prefix_before_and_infix_after_the_context(task):
    tok = CharTokenizer(128)
    special = {"prefix": [200, 201], "infix": [202]}
    ids, start = task.tokens(tok, Pair("ab", "x"), special)
    sep = tok.encode("ab =", add_special_tokens=False)
    assert ids == [200, 201, *sep, 202, *tok.encode(" x", add_special_tokens=False), tok.eos_token_id]
    assert start == len(sep) + 3


@pytest.mark.parametrize("loop", ["released", "transformers"])
def test_each_distinct_input_is_decoded_once_and_results_keep_input_order(loop, monkeypatch):
    import experiments.tasks.generation as generation

    model = build("tiny_gpt2", head="causal_lm", seed=0).eval()
    tok = CharTokenizer(128)
    rows = []
    if loop == "released":
        original = generation.beam_search
        monkeypatch.setattr(generation, "beam_search", lambda m, c, *a: rows.append(len(c)) or original(m, c, *a))
    else:
        original = model.generate
        model.generate = lambda **kw: rows.append(kw["input_ids"].shape[0]) or original(**kw)
    contexts = [[5, 6, 7], [8, 9], [5, 6, 7], [10], [8, 9]]
    settings = {"num_beams": 2, "max_new_tokens": 4, "batch_size": 2, "loop": loop}
    if loop == "transformers":
        settings |= {"no_repeat_scope": "all", "ban_before_softmax": False}
    texts = generate(model, tok, contexts, settings, "cpu")
    assert sum(rows) == 3 and texts[0] == texts[2] and texts[1] == texts[4]
    alone = generate(model, tok, [[8, 9]], settings, "cpu")  # left padding does not change the result
    assert alone[0] == texts[1]


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_llama"])
def test_merged_and_unmerged_models_decode_the_same_text(family):
    model = build(family, head="causal_lm", seed=0).eval()
    lora.apply(model, lora.LoRAConfig(r=4, alpha=8, targets=["q", "v"]))
    randomize_lora(model, std=0.3)
    tok = CharTokenizer(128)
    contexts = [tok.encode(s, add_special_tokens=False) for s in ("name[Aromi]", "eatType[pub], area[riverside]")]
    settings = {"num_beams": 3, "max_new_tokens": 12}
    unmerged = generate(model, tok, contexts, settings, "cpu")
    lora.merge(model)
    assert generate(model, tok, contexts, settings, "cpu") == unmerged
    assert any(unmerged)  # something was generated


TINY = ["model=tiny_gpt2", "model.arch.n_positions=256", "trainer.max_steps=4", "trainer.train_limit=64",
        "trainer.eval_limit=16", "trainer.batch_size=8", "trainer.eval_every=2", "task.decode_limit=6",
        "task.decoding.num_beams=2", "task.decoding.max_new_tokens=8"]  # fmt: skip


def tiny_run(tmp_path: Path, *overrides: str) -> dict:
    cfg = OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}", *TINY, *overrides]), resolve=True)
    return run(cfg)


@needs("e2e/trainset.csv", "e2e/devset.csv", "e2e/testset_w_refs.csv")
def test_tiny_e2e_run_trains_decodes_and_scores_with_the_official_metrics(tmp_path):
    m = tiny_run(tmp_path, "task=e2e")
    assert set(m["test"]) == {f"test/{k}" for k in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")}
    assert m["decoded_inputs"] == 6 and m["best"]["dev/loss"] > 0
    predictions = (tmp_path / "predictions" / "test.txt").read_text().splitlines()
    references = (tmp_path / "predictions" / "test-references.txt").read_text().split("\n\n")
    assert len(predictions) == 6 and len([r for r in references if r.strip()]) == 6
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == m["test"]


@needs("webnlg/webnlg_challenge_2017/train", "webnlg/webnlg_challenge_2017/test/testdata_with_lex.xml")
def test_webnlg_scores_seen_and_unseen_categories_apart(tmp_path, monkeypatch):
    from experiments.tasks import nlg

    original = nlg.NLGTask.records

    def mixed(self, split):  # the first test entries are all seen: take 3 seen and 3 unseen
        records = original(self, split)
        return (
            [r for r in records if r.seen][:3] + [r for r in records if r.seen is False][:3]
            if split == "test"
            else records
        )

    monkeypatch.setattr(nlg.NLGTask, "records", mixed)
    m = tiny_run(tmp_path, "task=webnlg")
    for part in ("test", "test_seen", "test_unseen"):
        assert {f"{part}/{k}" for k in ("BLEU", "METEOR", "TER")} <= set(m["test"])


@needs("dart/dart-v1.1.1-full-dev.json", "dart/dart-v1.1.1-full-test.xml")
def test_dart_without_its_training_file_says_so_and_still_evaluates(tmp_path):
    with pytest.raises(TaskError, match="not in the offline bundle.*max_steps=0"):
        NLGTask("dart", hub=False).examples("train")
    m = tiny_run(tmp_path, "task=dart", "task.hub=false", "trainer.max_steps=0")
    assert m["steps"] == 0 and m["best"]["dev/loss"] > 0 and "test/BLEU" in m["test"]


def test_the_hub_fallback_groups_references_per_input(monkeypatch, tmp_path):
    rows = [
        {"meaning_representation": "name[A]", "target": "A is nice.", "references": []},
        {"meaning_representation": "name[A]", "target": "A is good.", "references": []},
        {"meaning_representation": "name[B]", "target": "B.", "references": ["B.", "It is B."]},
    ]
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return rows

    monkeypatch.setattr("datasets.load_dataset", load_dataset)
    assert hub_records("e2e", "test") == [Record("name[A]", ("A is nice.", "A is good.")),
                                          Record("name[B]", ("B.", "It is B."))]  # fmt: skip
    assert calls == [("GEM/e2e_nlg", None, "test")]
    task = NLGTask("e2e", data_dir=str(tmp_path))  # no files there: the hub is asked
    assert len(task.examples("dev")) == 4


def test_missing_files_without_the_hub_are_one_clear_error(tmp_path):
    with pytest.raises(TaskError, match=r"e2e train not found: expected .*trainset.csv \(and task.hub=false\)"):
        NLGTask("e2e", data_dir=str(tmp_path), hub=False).examples("train")


def test_table_11_experiment_files_compose_with_the_papers_settings():
    for model in ("gpt2_medium", "gpt2_large"):
        for task, smoothing, penalty in (("e2e", 0.1, 0.8), ("webnlg", 0.1, 0.8), ("dart", 0.0, 0.8)):
            cfg = OmegaConf.to_container(compose([f"experiment={model}_{task}"]), resolve=True)
            t, m, d = cfg["trainer"], cfg["method"], cfg["task"]["decoding"]
            assert (m["r"], m["alpha"], m["targets"], t["lr"], t["batch_size"], t["epochs"]) == (
                4,
                32,
                ["q", "v"],
                2e-4,
                8,
                5,
            )
            assert (t["label_smoothing"], d["length_penalty"], d["num_beams"], d["no_repeat_ngram_size"]) == (
                smoothing, penalty, 10, 4)  # fmt: skip
            # ... run as microsoft/LoRA's released code runs them (its README's length penalty 0.8 for E2E)
            released = (cfg["task"]["format"], d["loop"], d["no_repeat_scope"], d["ban_before_softmax"],
                        d["blank_line_ends"], d["clean"], t["optimizer"], t["max_grad_norm"], t["base_dropout"],
                        m["init"])  # fmt: skip
            assert released == ("released", "released", "generated", True, True, "released", "adamw_released",
                                0.0, 0.0, "kaiming_uniform")  # fmt: skip


@needs("e2e/trainset.csv", "e2e/devset.csv", "e2e/testset_w_refs.csv")
def test_a_finished_run_decodes_again_into_its_own_folder_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    from experiments.decode import decode_run
    from experiments.runs import RunError

    tiny_run(tmp_path, "task=e2e", "task.decode_limit=3")
    first = (tmp_path / "predictions" / "test.txt").read_text()
    result = decode_run(tmp_path, "again", limit=3)
    assert (tmp_path / "decodes" / "again" / "predictions" / "test.txt").read_text() == first  # same weights, same text
    assert set(result["test"]) == set(json.loads((tmp_path / "metrics.json").read_text())["test"])
    with pytest.raises(RunError, match="exists; choose another --name"):
        decode_run(tmp_path, "again", limit=3)
    cli = [sys.executable, "-m", "experiments.decode", str(tmp_path / "nothing"), "--name", "x"]
    out = subprocess.run(cli, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "holds no trained run" in out.stderr


@needs("e2e/trainset.csv", "e2e/devset.csv", "e2e/testset_w_refs.csv")
def test_how_a_batch_is_split_into_micro_batches_does_not_change_the_update(tmp_path):
    """The loss is the mean over every completion token of the step: one batch of 8 and four micro-batches
    of 2 (of different token counts) give the same weights. Averaging the micro-batches' own means, as
    loss / grad_accum does, weighs a token of a short micro-batch more and misses by 3.5e-2."""
    steady = ["task=e2e", "method.dropout=0", "+model.arch.resid_pdrop=0", "+model.arch.embd_pdrop=0",
              "+model.arch.attn_pdrop=0", "trainer.lr=1e-2", "trainer.eval_every=4"]  # fmt: skip
    tiny_run(tmp_path / "whole", *steady, "trainer.batch_size=8")
    tiny_run(tmp_path / "split", *steady, "trainer.batch_size=2", "trainer.grad_accum=4")
    a, _ = read_safetensors(tmp_path / "whole" / "adapter.safetensors")
    b, _ = read_safetensors(tmp_path / "split" / "adapter.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # measured 1e-7 (3.5e-2 before the fix)
