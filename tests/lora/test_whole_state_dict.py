"""Other people's checkpoints: whole state dicts (microsoft/LoRA's end-of-training checkpoint, the HF Trainer's),
the wrappers and prefixes training scripts put around them, PEFT's bias="all" with a classifier, damaged
adapter_config.json files, and save paths that cannot hold a file."""

import copy
import json
import logging
import os

import pytest
import torch
from conftest import batch, logits, tiny
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_loralib_format import ALPHA, encoder_with_linear, gpt2_with_merged_linear

import lora
from lora import LoRAError

N_CTX = 16  # the causal mask's size in the tiny checkpoint (1024 in microsoft's GPT-2)


@pytest.fixture(scope="module")
def microsoft_gpt2():
    """(logits of a GPT-2 with loralib's MergedLinear, its whole state dict as microsoft's gpt2_ft.py saves it last)."""
    reference, _ = gpt2_with_merged_linear(tiny("gpt2"), r=4)
    return logits(reference, batch()), microsofts_layout(reference.state_dict())


def microsofts_layout(state: dict) -> dict:
    """The key layout of gpt2_ft.py's end-of-training checkpoint (examples/NLG/src/model.py): the whole model
    under DDP's ``module.``, the tied output layer named lm_head.decoder, each block's causal mask kept as a
    buffer ``attn.bias``, all under ``model_state_dict``."""
    out = {}
    for k, v in state.items():
        out["module." + ("lm_head.decoder.weight" if k == "lm_head.weight" else k)] = v.clone()
        if k.endswith(".attn.c_attn.weight"):
            mask = torch.tril(torch.ones(N_CTX, N_CTX)).view(1, 1, N_CTX, N_CTX)
            out["module." + k.replace(".c_attn.weight", ".bias")] = mask
    return {"model_state_dict": out}


def test_microsofts_end_of_training_checkpoint_loads_its_lora_and_says_what_it_took(microsoft_gpt2, tmp_path, caplog):
    reference, whole = microsoft_gpt2
    torch.save(whole, tmp_path / "model.26289.pt")
    with caplog.at_level(logging.WARNING, logger="lora"):
        ours = lora.load_loralib(tiny("gpt2"), tmp_path / "model.26289.pt", alpha=ALPHA).eval()
    torch.testing.assert_close(logits(ours, batch()), reference, atol=1e-5, rtol=1e-5)
    assert (reference - logits(tiny("gpt2"), batch())).abs().max() > 1e-3  # the LoRA matters
    assert "whole state dict: took its 4 LoRA matrices and 0 head tensors; its other 29 tensors equal the model " \
           "given's (2 computed buffers such as transformer.h.0.attn.bias not compared)" in caplog.text  # fmt: skip


def _wrapped(state: dict, layout: str) -> dict:
    inner = {k.removeprefix("module."): v for k, v in state["model_state_dict"].items()}
    return {
        "lightning": lambda: {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in inner.items()}},
        "deepspeed": lambda: {"module": inner, "optimizer": {"step": torch.tensor(4)}, "global_steps": 4},
        "compiled": lambda: {f"_orig_mod.{k}": v for k, v in inner.items()},
        "bare": lambda: inner,
        "fp16": lambda: {k: v.half() if v.is_floating_point() else v for k, v in inner.items()},
    }[layout]()


@pytest.mark.parametrize("layout", ["lightning", "deepspeed", "compiled", "bare", "fp16"])
def test_wrappers_prefixes_and_half_precision_of_a_whole_state_dict_load_the_same(microsoft_gpt2, layout, tmp_path):
    reference, whole = microsoft_gpt2
    torch.save(_wrapped(whole, layout), tmp_path / "last.ckpt.pt")
    ours = lora.load_loralib(tiny("gpt2"), tmp_path / "last.ckpt.pt", alpha=ALPHA).eval()
    tolerance = 2e-3 if layout == "fp16" else 1e-5  # fp16 LoRA matrices, rounded; the base equal up to rounding
    torch.testing.assert_close(logits(ours, batch()), reference, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_hf_trainers_whole_model_with_its_classifier_loads(name, tmp_path):
    """microsoft/LoRA's NLU scripts train with the HF Trainer, which saves the whole model, LoRA and head inside."""
    model = tiny("roberta")
    reference, _ = encoder_with_linear(model, "roberta", r=2)
    state = {k: v.clone().contiguous() for k, v in reference.state_dict().items()}
    if name.endswith(".bin"):
        torch.save(state, tmp_path / name)
    else:
        save_file(state, tmp_path / name)
    ours = lora.load_loralib(tiny("roberta", seed=1), tmp_path / name, alpha=ALPHA).eval()  # another random head
    torch.testing.assert_close(logits(ours, batch()), logits(reference, batch()), atol=1e-5, rtol=1e-5)
    if name.endswith(".safetensors"):  # lora.load says what it is (a .bin: see test_loralib_format)
        with pytest.raises(LoRAError, match="a loralib state dict .* read it with lora.load_loralib"):
            lora.load(tiny("roberta"), tmp_path / name)


def test_peft_weights_given_without_their_folder_say_to_give_the_folder(tmp_path):
    model = lora.apply(tiny("roberta"), lora.LoRAConfig(r=2, alpha=4, targets=("q", "v")))
    save_file({"base_model.model.roberta.encoder.layer.0.attention.self.query.lora_A.weight": torch.ones(2, 32)},
              tmp_path / "adapter_model.safetensors")  # fmt: skip
    with pytest.raises(LoRAError, match="PEFT's adapter weights; give lora.load the folder .* adapter_config.json"):
        lora.load(model, tmp_path / "adapter_model.safetensors")


def test_a_whole_state_dict_over_another_base_is_one_line_naming_the_tensors(microsoft_gpt2, tmp_path):
    _, whole = microsoft_gpt2
    state = dict(whole["model_state_dict"])
    state["module.transformer.h.1.mlp.c_fc.weight"] = state["module.transformer.h.1.mlp.c_fc.weight"] + 0.25
    torch.save(state, tmp_path / "other_base.pt")
    with pytest.raises(LoRAError, match=r"base differs from the model given in 1 of 31 tensors \(most: "
                                        r"transformer.h.1.mlp.c_fc.weight by 0.25\)"):  # fmt: skip
        lora.load_loralib(tiny("gpt2"), tmp_path / "other_base.pt", alpha=ALPHA)
    torch.save({**whole["model_state_dict"], "module.transformer.h.0.attn.c_attn.lora_B.extra": torch.ones(2)},
               tmp_path / "extra.pt")  # fmt: skip
    with pytest.raises(LoRAError, match="1 tensors have no place in it .*c_attn.lora_B.extra.* another architecture"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "extra.pt", alpha=ALPHA)
    torch.save({k: v for k, v in whole["model_state_dict"].items() if not k.endswith("h.1.attn.c_attn.lora_A")},
               tmp_path / "stray.pt")  # fmt: skip
    with pytest.raises(LoRAError, match="h.1.attn.c_attn.lora_B has no lora_A beside it"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "stray.pt", alpha=ALPHA)


def test_peft_bias_all_with_a_classifier_loads_as_peft_loads_it(tmp_path):
    """PEFT's sequence classification puts the classifier in modules_to_save; with bias="all" its file also
    holds the classifier's trained copy and PEFT's untouched original by their wrapper names."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("roberta"), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                                  bias="all", task_type="SEQ_CLS"))  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(tmp_path)
    ours = lora.load(tiny("roberta", seed=1), tmp_path).eval()
    torch.testing.assert_close(logits(ours, batch()), logits(model.eval(), batch()), atol=1e-5, rtol=1e-5)
    assert lora.count(ours).by_type["bias"] > 0  # every bias trained, as in the file


@pytest.mark.parametrize(
    "config, says",
    [
        ([{"peft_type": "LORA"}], "holds a JSON list, not an object of PEFT settings"),
        ("LORA", "holds a JSON str, not an object"),
        (None, "holds a JSON NoneType, not an object"),
        ({"peft_type": "LORA", "lora_alpha": "16"}, "lora_alpha must be a finite number, got '16'"),
        ({"peft_type": "LORA", "lora_alpha": True}, "lora_alpha must be a finite number, got True"),
        ({"peft_type": "LORA", "lora_alpha": float("nan")}, "lora_alpha must be a finite number, got nan"),
        ({"peft_type": "LORA", "alpha_pattern": {"query": [16]}}, "alpha_pattern must be an object of module"),
        ({"peft_type": "LORA", "alpha_pattern": ["query"]}, "alpha_pattern must be an object of module"),
        ({"peft_type": "LORA", "use_rslora": "false"}, "use_rslora must be true or false, got 'false'"),
        ({"peft_type": ["LORA"]}, "peft_type must be a string"),
        ({"peft_type": "LORA", "lora_dropout": {"p": 0.1}}, "lora_dropout must be a finite number"),
        ({"peft_type": "LORA", "modules_to_save": [1]}, "modules_to_save must be a name or a list of names"),
    ],
    ids=lambda v: None if isinstance(v, str) else json.dumps(v)[:40],
)
def test_adapter_config_of_the_wrong_json_types_is_one_line(config, says, tmp_path):
    model = lora.apply(tiny("roberta"), lora.LoRAConfig(r=2, alpha=4, targets=("q", "v")))
    lora.save(model, tmp_path, format="peft")
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(LoRAError, match=f"adapter_config.json.*{says}".replace("(", r"\(").replace("[", r"\[")):
        lora.load(tiny("roberta"), tmp_path)


@pytest.fixture(scope="module")
def adapted():
    return lora.apply(tiny("bert"), lora.LoRAConfig(r=2, alpha=4, targets=("q", "v")))


def test_saving_where_no_file_can_be_is_one_line_and_leaves_the_blocker(adapted, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("kept")
    with pytest.raises(LoRAError, match=r"cannot write .*adapter.safetensors: .*notes.txt is a file, not a folder"):
        lora.save(adapted, tmp_path / "notes.txt" / "adapter.safetensors")
    with pytest.raises(LoRAError, match=r"cannot write .*notes.txt/sub/adapter_model.safetensors: .*notes.txt is a"):
        lora.save(adapted, tmp_path / "notes.txt" / "sub", format="peft")
    assert (tmp_path / "notes.txt").read_text() == "kept"
    (tmp_path / "a_folder.safetensors").mkdir()
    with pytest.raises(LoRAError, match="a_folder.safetensors: it is a folder"):
        lora.save(adapted, tmp_path / "a_folder.safetensors")
    with pytest.raises(LoRAError, match="a name in it is longer than the file system allows"):
        lora.save(adapted, tmp_path / ("x" * 300 + ".safetensors"))

    def denied(*args, **kwargs):  # the tests run as root, for whom chmod does not deny; the OS's answer is this
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(LoRAError, match=r"cannot write .*ok.safetensors: Permission denied; choose another path"):
        lora.save(adapted, tmp_path / "ok.safetensors")
    assert not os.path.exists(tmp_path / "ok.safetensors")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lora.peft_format import _READ  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def peft_written(tmp_path_factory):
    """A PEFT folder as PEFT writes it: no config of ours in the weights' header, so every field is read."""
    folder = tmp_path_factory.mktemp("peft")
    lora.save(lora.apply(tiny("bert"), lora.LoRAConfig(r=2, alpha=4, targets=("q", "v"))), folder, format="peft")
    save_file(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.safetensors")
    return folder, json.loads((folder / "adapter_config.json").read_text()), tiny("bert")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(sorted(_READ)), JSON, min_size=1, max_size=3))
def test_every_field_peft_reads_fuzzed_with_any_json_is_loaded_or_one_line(peft_written, changes):
    folder, config, model = peft_written
    (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    try:
        lora.load(copy.deepcopy(model), folder)
    except LoRAError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize("damage", ["nan", "inf", "int8"])
def test_an_adapter_with_non_finite_or_integer_weights_is_refused_in_every_format(damage, adapted, tmp_path):
    """NaN from a diverged run made every output NaN, silently; int8 (quantized) weights were cast silently."""

    def damaged(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.int8) if damage == "int8" else t.clone().fill_(float(damage))

    ours = lora.save(adapted, tmp_path / "ours.safetensors")
    tensors = load_file(ours)
    key = next(k for k in tensors if ".lora_B." in k)
    with safe_open(ours, "pt") as f:
        save_file({**tensors, key: damaged(tensors[key])}, ours, metadata=f.metadata())
    says = "holds torch.int8 values, not floating-point" if damage == "int8" else "holds NaN or infinite values"
    with pytest.raises(LoRAError, match=f"{key} {says}"):
        lora.load(tiny("bert"), ours)
    _, lora_only = gpt2_with_merged_linear(tiny("gpt2"), r=4)
    state = dict(lora_only["model_state_dict"])
    state["module.transformer.h.0.attn.c_attn.lora_A"] = damaged(state["module.transformer.h.0.attn.c_attn.lora_A"])
    torch.save(state, tmp_path / "loralib.pt")
    with pytest.raises(LoRAError, match=f"transformer.h.0.attn.c_attn.lora_A.q {says}"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "loralib.pt", alpha=ALPHA)


def test_peft_adapter_saved_as_a_pickle_loads_as_peft_loads_it(tmp_path):
    """PEFT's save_pretrained(safe_serialization=False) writes adapter_model.bin, which PEFT loads; read as plain
    tensors only (weights_only), as every pickle here."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("llama"), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (p for p in model.parameters() if p.requires_grad):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").exists() and not (tmp_path / "adapter_model.safetensors").exists()
    ours = lora.load(tiny("llama"), tmp_path).eval()
    torch.testing.assert_close(logits(ours, batch()), logits(model.eval(), batch()), atol=1e-5, rtol=1e-5)
    (tmp_path / "adapter_model.bin").unlink()
    with pytest.raises(LoRAError, match="has adapter_config.json but neither adapter_model.safetensors nor .*bin"):
        lora.load(tiny("llama"), tmp_path)


def test_a_path_with_a_nul_character_is_one_line(adapted, tmp_path):
    with pytest.raises(LoRAError, match="a path cannot hold a NUL character"):
        lora.save(adapted, tmp_path / "a\0b.safetensors")


@pytest.mark.parametrize("alpha", ["16", float("nan"), float("inf"), True, -1])
def test_load_loralib_with_an_alpha_that_is_not_a_positive_number_is_one_line(alpha, tmp_path):
    _, lora_only = gpt2_with_merged_linear(tiny("gpt2"), r=4)
    torch.save(lora_only, tmp_path / "a.pt")
    with pytest.raises(LoRAError, match=f"give the positive number its training script used \\(got {alpha!r}\\)"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "a.pt", alpha=alpha)


def test_our_adapter_given_to_load_loralib_says_to_use_lora_load(adapted, tmp_path):
    with pytest.raises(
        LoRAError, match="an adapter in this library's or PEFT's layout, not loralib's: load it with lora.load"
    ):
        lora.load_loralib(tiny("bert"), lora.save(adapted, tmp_path / "ours.safetensors"), alpha=ALPHA)


def test_load_loralib_into_a_model_that_already_has_lora_says_so(tmp_path):
    """It used to say "query is a LoRALayer; LoRA adapts Linear, Conv1D and Embedding" (found trying cases anew)."""
    model = lora.apply(tiny("bert"), lora.LoRAConfig(r=2, targets=("q", "v")))
    torch.save({"bert.encoder.layer.0.attention.self.query.lora_A": torch.zeros(2, 32)}, tmp_path / "x.bin")
    with pytest.raises(lora.LoRAError, match="already has LoRA layers: give it the base model, or lora.unload"):
        lora.load_loralib(model, tmp_path / "x.bin", alpha=4)
