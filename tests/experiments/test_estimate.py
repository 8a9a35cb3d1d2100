"""experiments.estimate: GPT-3's Section 4.2 numbers from the architecture alone, on the meta device."""

import json

import pytest

from experiments.estimate import main


def test_gpt3_lora_r4_against_full_fine_tuning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["model=gpt3_175b", "method=lora", "method.r=4"]) == 0
    out = capsys.readouterr().out
    e = json.loads((tmp_path / "runs" / "estimates" / "gpt3_175b-lora.json").read_text())
    lora_, full = e["with_method"], e["full_ft"]
    assert lora_["trainable"] == 96 * 2 * (4 * 12288 + 12288 * 4)  # q and v in 96 blocks: A and B
    assert full["trainable"] == full["total"] == lora_["total"] - lora_["trainable"]  # LoRA adds its matrices
    assert round(full["total"] / 1e9, 1) == 174.6
    assert lora_["checkpoint_bytes_16bit"] == 2 * lora_["trainable"]  # 37.7 MB; the paper says 35 MB
    assert full["memory_bytes"]["total"] == 16 * full["total"]  # ZeRO's 16 bytes per trained parameter
    assert lora_["memory_bytes"]["total"] == 2 * lora_["total"] + 14 * lora_["trainable"]  # + grads, Adam
    assert 9000 < e["trainable_ratio"] < 10000 and "10,000x" in out and "37.7 MB" in out
    assert main(["model=gpt3_175b", "method=lora", "method.r=4"]) == 0  # a second estimate: a new file
    assert (tmp_path / "runs" / "estimates" / "gpt3_175b-lora-2.json").exists()


@pytest.mark.parametrize(("model", "method"), [("roberta_large", "adapter_h"), ("gpt2_medium", "prefix_layer")])
def test_any_model_and_method(tmp_path, monkeypatch, capsys, model, method):
    monkeypatch.chdir(tmp_path)
    assert main([f"model={model}", f"method={method}"]) == 0
    assert f"{model}: {method} against full fine-tuning" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["model=gpt3_175b", "method=bitfit", "model.arch.model_type=llama"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_help_prints_the_usage_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m experiments.estimate model=gpt3_175b" in out and not (tmp_path / "runs").exists()
