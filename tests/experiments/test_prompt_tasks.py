"""The paper's GPT-3 tasks on a tiny decoder, end to end: train, decode, score into a run folder. Data: small files
in the official formats (the test modules of the readers write them); each run's test score must equal its own
written outputs scored again with the metric, and the targets it trained on must score perfectly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_prompt_data import PAIRS, SAMSUM, write_glue, write_samsum
from test_wikisql import CASES, TABLES

from experiments.cli import compose
from experiments.metrics.labels import accuracy
from experiments.metrics.rouge import samsum_rouge
from experiments.metrics.wikisql import wikisql_scores
from experiments.tasks import build_task
from experiments.tasks.base import TaskError
from experiments.tasks.prompt_data import label_from_text
from experiments.tasks.wikisql_data import read_wikisql, text_to_sql
from experiments.train import run

TINY = ["model=tiny_gpt2", "model.arch.n_positions=512", "trainer.max_steps=4", "trainer.batch_size=4",
        "trainer.train_limit=16", "trainer.eval_limit=4", "trainer.eval_every=2", "trainer.lr=1e-2",
        "task.decode_limit=4", "task.decoding.max_new_tokens=12", "trainer.threads=1"]  # fmt: skip


def wikisql_files(folder):
    """train and dev splits of the reader tests' tables and gold queries (the predictions are not used)."""
    tables = "".join(json.dumps(t) + "\n" for t in TABLES)
    questions = "".join(json.dumps({"phase": 1, "table_id": t, "question": text, "sql": gold}) + "\n"
                        for t, text, gold, _, _ in CASES)  # fmt: skip
    for split in ("train", "dev"):
        (folder / f"{split}.jsonl").write_text(questions)
        (folder / f"{split}.tables.jsonl").write_text(tables)
    return folder


def samsum_files(folder):
    data = SAMSUM * 4
    for name in ("train.json", "val.json", "test.json"):
        write_samsum(folder, name, data)
    return folder


def mnli_files(folder):
    for split in ("train", "dev_matched"):
        write_glue(folder, split, PAIRS * 4)
    return folder


FILES = {"wikisql": wikisql_files, "samsum": samsum_files, "mnli_gen": mnli_files}


def tiny_run(tmp_path, name, *overrides):
    data = FILES[name](tmp_path / "data")
    out = tmp_path / "run"
    cfg = compose([f"trainer.output_dir={out}", f"task={name}", f"task.data_dir={data}", *TINY, *overrides])
    return run(OmegaConf.to_container(cfg, resolve=True)), out


@pytest.fixture(autouse=True)
def _data_folder(tmp_path):
    (tmp_path / "data").mkdir()


def test_wikisql_end_to_end_scores_its_own_outputs(tmp_path):
    metrics, out = tiny_run(tmp_path, "wikisql")
    examples = read_wikisql(tmp_path / "data", "dev")[:4]
    texts = (out / "predictions" / "dev.txt").read_text().splitlines()
    again = wikisql_scores([text_to_sql(t, ex.header) for t, ex in zip(texts, examples, strict=True)],
                           [ex.sql for ex in examples], examples)  # fmt: skip
    assert metrics["test"] == {f"dev/{k}": round(v, 6) for k, v in again.items()}
    targets = (out / "predictions" / "dev-targets.txt").read_text().splitlines()
    perfect = wikisql_scores([text_to_sql(t, ex.header) for t, ex in zip(targets, examples, strict=True)],
                             [ex.sql for ex in examples], examples)  # fmt: skip
    assert perfect == {"lf_accuracy": 1.0, "ex_accuracy": 1.0}
    assert metrics["status"] == "complete" and metrics["decoded_inputs"] == 4


def test_samsum_end_to_end_scores_its_own_outputs(tmp_path):
    metrics, out = tiny_run(tmp_path, "samsum", "task.scoring.use_stemmer=false")  # the config's choice is used
    texts = (out / "predictions" / "test.txt").read_text().splitlines()
    summaries = [ex["summary"].replace("\r\n", "\n") for ex in (SAMSUM * 4)[:4]]
    again = samsum_rouge(texts, summaries, use_stemmer=False)
    assert metrics["test"] == {f"test/{k}": round(v, 6) for k, v in again.items()}
    assert set(metrics["test"]) == {"test/ROUGE-1", "test/ROUGE-2", "test/ROUGE-L"}


def test_mnli_end_to_end_scores_its_own_outputs_and_trains_on_a_balanced_subset(tmp_path):
    metrics, out = tiny_run(tmp_path, "mnli_gen", "task.train_size=6")
    texts = (out / "predictions" / "dev.txt").read_text().splitlines()
    gold = [label for _, _, label in (PAIRS * 4)[:4]]
    assert metrics["test"] == {"dev/accuracy": round(accuracy([label_from_text(t) for t in texts], gold), 6)}
    task = build_task({"name": "mnli_gen", "data_dir": str(tmp_path / "data"), "train_size": 6})
    assert Counter(label for _, _, label in task.raw("train")) == {"entailment": 2, "neutral": 2, "contradiction": 2}
    assert [p.completion for p in task.examples("train")] == [label for _, _, label in task.raw("train")]


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "wikisql", "train_size": 100}, "task.train_size .* is an integer >= 1 for mnli_gen only"),
        ({"name": "mnli_gen", "decode_split": "test"}, "task.decode_split must be one of train, dev"),
        ({"name": "samsum", "decoding": {"num_beams": 0}}, "task.decoding.num_beams must be an integer >= 1"),
        ({"name": "samsum", "scoring": {"stemmer": True}}, "task.scoring has no stemmer for samsum; it takes use_st"),
        ({"name": "mnli_gen", "scoring": {"use_stemmer": True}}, "task.scoring has no use_stemmer .* takes nothing"),
    ],
)
def test_bad_prompt_task_settings_are_one_line(cfg, message):
    with pytest.raises(TaskError, match=message):
        build_task(cfg)


def test_missing_data_is_one_line_naming_where_to_get_it(tmp_path):
    task = build_task({"name": "wikisql", "data_dir": str(tmp_path)})
    with pytest.raises(TaskError, match="salesforce/WikiSQL"):
        task.examples("train")


def test_a_table4_sweep_on_a_tiny_decoder_lands_in_table4(tmp_path):
    """The sweep as a user runs it (Hydra multirun, two of its rows), on a tiny GPT-2 and WikiSQL files in the
    official format: each run's decoded score is its Table 4 cell, beside the paper's row."""
    from analysis import paper, tables

    data = wikisql_files((tmp_path / "data").resolve())
    sweep = tmp_path / "sweep"
    tiny = ["model=tiny_gpt2", "model.arch.n_positions=512", "trainer.max_steps=2", "trainer.batch_size=4",
            "trainer.grad_accum=1", "trainer.train_limit=8", "trainer.eval_limit=4", "trainer.threads=1",
            "task.decode_limit=4", "task.decoding.max_new_tokens=8", f"task.data_dir={data}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "run.py", "-m", "+sweep=table4_smollm2_135m", "+gpt3_row=lora_qv1,prefix_layer_lp8_li8",
           *tiny, f"hydra.sweep.dir={sweep}", f"trainer.output_dir={sweep}/runs/${{hydra:job.num}}"]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = tables.collect(sweep / "runs")
    assert sorted(r["setting"] for r in rows) == ["lora q=1,v=1", "prefix_layer l_p=8,l_i=8"]
    ((_, group),) = tables.groups(rows, tables.SWEPT["methods"])
    lines = {x["setting"]: x for x in tables.gpt3_methods(group, paper.TABLE4) if x["runs"]}
    for r in rows:
        metrics = json.loads((sweep / "runs" / r["run"] / "metrics.json").read_text())
        line = lines[r["setting"]]
        assert line["ours"]["lf_accuracy"]["mean"] == pytest.approx(100 * metrics["test"]["dev/lf_accuracy"])
        assert metrics["evals"] and r["lr"] == {"lora": 2e-4, "prefix_layer": 1e-4}[r["method"]]  # Table 12
    assert (lines["lora q=1,v=1"]["paper"], lines["prefix_layer l_p=8,l_i=8"]["paper"]) == (73.4, 70.1)
