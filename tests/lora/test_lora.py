"""The LoRA library on a tiny random model of every family: behaviour against closed forms and PEFT."""

import copy

import pytest
import torch
from conftest import FAMILIES, batch, logits, randomize_lora, tiny

import lora
from lora import LoRAConfig, LoRAError

ALL_TYPES = ("q", "k", "v", "o", "mlp_in", "mlp_out", "embed")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def test_apply_leaves_outputs_unchanged(pair):
    base, model = pair
    lora.apply(model, LoRAConfig(r=4, targets=ALL_TYPES))
    assert torch.equal(logits(model, batch()), logits(base, batch()))


def test_lora_changes_outputs_once_b_is_nonzero(pair):
    base, model = pair
    randomize_lora(lora.apply(model, LoRAConfig(r=4, targets=ALL_TYPES)))
    assert rel_err(logits(model, batch()), logits(base, batch())) > 1e-3


def test_merge_equals_unmerged_and_is_idempotent(family):
    model = randomize_lora(lora.apply(tiny(family), LoRAConfig(r=4, alpha=8, targets=ALL_TYPES)), std=0.1)
    x = batch()
    unmerged = logits(model, x)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora.merge(model)
    merged = logits(model, x)
    assert rel_err(merged, unmerged) < 1e-5
    w1 = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert any(not torch.equal(w1[n], w0[n]) for n in w0 if n.endswith("base.weight"))
    lora.merge(model)  # a second merge is a no-op, not a double update
    assert all(torch.equal(p, w1[n]) for n, p in model.named_parameters())
    lora.unmerge(model)
    assert all(torch.allclose(p, w0[n], atol=1e-6) for n, p in model.named_parameters() if n in w0)
    assert rel_err(logits(model, x), unmerged) < 1e-5
    w2 = {n: p.detach().clone() for n, p in model.named_parameters()}
    lora.unmerge(model)  # unmerging an unmerged model is a no-op
    assert all(torch.equal(p, w2[n]) for n, p in model.named_parameters())


def test_unload_gives_plain_model_with_merged_outputs(family):
    model = randomize_lora(lora.apply(tiny(family), LoRAConfig(r=2, targets=("q", "v", "mlp_out"))))
    expected = logits(model, batch())
    lora.unload(model)
    assert not list(lora.lora_layers(model)) and not hasattr(model, "lora_config")
    assert rel_err(logits(model, batch()), expected) < 1e-5


def test_only_lora_parameters_get_gradients(family):
    model = lora.apply(tiny(family).train(), LoRAConfig(r=4, targets=("q", "v"), train_head=False))
    model(**batch()).logits.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        if ".lora_" in name:
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None, name
    grads = [layer.lora_B[t].grad for _, layer in lora.lora_layers(model) for t in layer.slots]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_trainable_count_is_2_lhat_d_r_for_square_weights():
    model = lora.apply(tiny("bert"), LoRAConfig(r=4, targets=("q", "v"), train_head=False))
    d, layers = 32, 2
    assert lora.count(model).trainable == 2 * (2 * layers) * d * 4
    assert lora.count(model).by_type == {"q": 2 * layers * d * 4, "v": 2 * layers * d * 4}


def test_gpt2_fused_c_attn_adapts_only_the_q_and_v_slices():
    model = lora.apply(tiny("gpt2"), LoRAConfig(r={"q": 2, "v": 3}, alpha=8))
    layers = dict(lora.lora_layers(model))
    assert sorted(layers) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    layer = layers["transformer.h.0.attn.c_attn"]
    assert {t: (s.offset, s.width, s.rank) for t, s in layer.slots.items()} == {"q": (0, 32, 2), "v": (64, 32, 3)}
    assert [tuple(layer.lora_A[t].shape) for t in "qv"] == [(2, 32), (3, 32)]
    assert [tuple(layer.lora_B[t].shape) for t in "qv"] == [(32, 2), (32, 3)]
    assert lora.count(model).lora == 2 * (2 * 32 + 32 * 2) + 2 * (3 * 32 + 32 * 3)
    # Delta W touches only q and v columns of the (in, 3d) Conv1D weight: k is unchanged by a merge.
    randomize_lora(model)
    w = layer.base.weight.detach().clone()
    lora.merge(model)
    diff = (layer.base.weight - w).abs().sum(0)
    assert diff[32:64].sum() == 0 and diff[:32].min() > 0 and diff[64:].min() > 0


def test_llama_grouped_kv_and_mlp_in_covers_gate_and_up():
    model = lora.apply(tiny("llama"), LoRAConfig(r=2, targets=("v", "mlp_in")))
    names = [n for n, _ in lora.lora_layers(model)]
    assert sum(n.endswith("gate_proj") for n in names) == 2 and sum(n.endswith("up_proj") for n in names) == 2
    v = dict(lora.lora_layers(model))["model.layers.0.self_attn.v_proj"]
    assert tuple(v.lora_B["v"].shape) == (16, 2)  # 2 kv heads x head dim 8


def test_layers_limit_which_blocks_are_adapted():
    model = lora.apply(tiny("roberta"), LoRAConfig(r=2, targets=("q",), layers=(1,)))
    assert [n for n, _ in lora.lora_layers(model)] == ["roberta.encoder.layer.1.attention.self.query"]


@pytest.mark.parametrize("bias", ["none", "lora_only", "all"])
def test_bias_modes(bias):
    model = lora.apply(tiny("bert"), LoRAConfig(r=2, targets=("q",), bias=bias, train_head=False))
    trained = {n for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")}
    every = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    expected = {
        "none": set(),
        "lora_only": {f"bert.encoder.layer.{i}.attention.self.query.base.bias" for i in range(2)},
        "all": every,
    }[bias]
    assert trained == expected


def test_task_head_is_trained_and_counted_apart():
    """BERT's head is its pooler (dense + tanh, as RoBERTa's classifier.dense) and its classifier, width 32."""
    model = lora.apply(tiny("bert"), LoRAConfig(r=2, targets=("q", "v")))
    c = lora.count(model)
    assert c.by_type["head"] == (32 * 32 + 32) + (32 * 2 + 2)
    assert c.trainable == c.lora + c.by_type["head"]
    assert all(p.requires_grad for p in model.bert.pooler.parameters())


def test_a_bare_encoder_keeps_its_pooler_frozen():
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    model = lora.apply(BertModel(config), LoRAConfig(r=2, targets=("q",)))
    assert "head" not in lora.count(model).by_type
    assert not any(p.requires_grad for p in model.pooler.parameters())


def test_the_default_init_is_the_papers_codes_in_the_library_and_the_config():
    """microsoft/LoRA's code (loralib), which produced the paper's tables, draws A Kaiming-uniform; measured against
    gaussian on Table 6's rows (docs/paper/tables5-6.md) it did no worse, so it is the default everywhere."""
    from omegaconf import OmegaConf

    from experiments.paths import CONF_DIR

    assert LoRAConfig().init == OmegaConf.load(CONF_DIR / "method" / "lora.yaml").init == "kaiming_uniform"


@pytest.mark.parametrize("init", ["gaussian", "kaiming_uniform"])
def test_inits_start_at_zero_update_with_random_a(init):
    model = lora.apply(tiny("llama"), LoRAConfig(r=4, targets=("q",), init=init))
    layer = next(layer for _, layer in lora.lora_layers(model))
    assert layer.lora_B["q"].abs().sum() == 0 and layer.lora_A["q"].std() > 0
    if init == "gaussian":
        assert abs(layer.lora_A["q"].std().item() - 1 / 4) < 0.05


def test_save_load_round_trip_gives_identical_outputs(pair, tmp_path):
    base, fresh = pair
    model = randomize_lora(lora.apply(base, LoRAConfig(r=4, targets=("q", "v", "mlp_in"), bias="lora_only")))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and ".lora_" not in n:
                p.add_(0.1)  # biases and head changed too: they must travel with the adapter
    file = lora.save(model, tmp_path / "adapter.safetensors")
    assert set(lora.trainable_state(model)) == set(lora.files.read_safetensors(file)[0])
    assert (tmp_path / "adapter.json").exists()
    lora.load(fresh, tmp_path)
    assert torch.equal(logits(fresh, batch()), logits(model, batch()))


def test_an_adapter_saved_under_an_inits_old_name_loads_under_the_new_one(tmp_path):
    """`paper` and `loralib` were renamed gaussian and kaiming_uniform: a config naming them is refused with the new
    name, an adapter file written before the rename still loads."""
    import json

    from safetensors.torch import save_file

    with pytest.raises(LoRAError, match="init=loralib is now called init=kaiming_uniform"):
        LoRAConfig(init="loralib")
    model = lora.apply(tiny("llama"), LoRAConfig(r=2, targets=("q",), init="kaiming_uniform"))
    tensors, meta = lora.files.read_safetensors(lora.save(model, tmp_path / "new.safetensors"))
    config = json.loads(meta["lora_config"])
    assert config["init"] == "kaiming_uniform"
    save_file(
        tensors,
        tmp_path / "old.safetensors",
        metadata={**meta, "lora_config": json.dumps({**config, "init": "loralib"})},
    )
    fresh = tiny("llama")
    lora.load(fresh, tmp_path / "old.safetensors")
    assert fresh.lora_config == model.lora_config and torch.equal(logits(fresh, batch()), logits(model, batch()))


def test_saved_file_holds_only_what_was_trained(tmp_path):
    model = lora.apply(tiny("llama"), LoRAConfig(r=2, targets=("q",)))
    tensors, meta = lora.files.read_safetensors(lora.save(model, tmp_path))
    assert sum(t.numel() for t in tensors.values()) == lora.count(model).trainable
    assert LoRAConfig.from_dict(__import__("json").loads(meta["lora_config"])) == model.lora_config


# --- against PEFT -------------------------------------------------------------------------------

PEFT_NAMES = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "llama": ["q_proj", "v_proj"],
}


@pytest.mark.parametrize("family", list(PEFT_NAMES))
def test_forward_equals_peft_given_the_same_a_and_b(family):
    from peft import LoraConfig, get_peft_model

    base = tiny(family)
    ours = randomize_lora(lora.apply(copy.deepcopy(base), LoRAConfig(r=4, alpha=8, train_head=False)))
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=PEFT_NAMES[family]))
    with torch.no_grad():
        for name, layer in lora.lora_layers(ours):
            (t,) = layer.slots
            module = theirs.base_model.model.get_submodule(name)
            module.lora_A["default"].weight.copy_(layer.lora_A[t])
            module.lora_B["default"].weight.copy_(layer.lora_B[t])
    assert rel_err(logits(ours, batch()), logits(theirs, batch())) < 1e-5
    assert lora.count(ours).trainable == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_peft_format_round_trip_through_the_real_peft(family, tmp_path):
    from peft import PeftModel

    targets = ("q", "v", "mlp_out") if family != "gpt2" else ("q", "v")
    ours = randomize_lora(lora.apply(tiny(family), LoRAConfig(r={t: 2 for t in targets}, alpha=4, bias="lora_only")))
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.requires_grad and ".lora_" not in n:
                p.add_(0.1)
    lora.save(ours, tmp_path / "peft", format="peft")
    theirs = PeftModel.from_pretrained(tiny(family), tmp_path / "peft")
    assert rel_err(logits(theirs, batch()), logits(ours, batch())) < 1e-5
    back = lora.load(tiny(family), tmp_path / "peft")
    assert torch.equal(logits(back, batch()), logits(ours, batch()))


PEFT_TRAINED = {**PEFT_NAMES, "gpt2": ["c_proj", "c_fc"]}  # PEFT cannot slice GPT-2's fused c_attn


@pytest.mark.parametrize("family", list(PEFT_TRAINED))
def test_adapter_written_by_peft_loads_here(family, tmp_path):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=3, lora_alpha=6, target_modules=PEFT_TRAINED[family], fan_in_fan_out=family == "gpt2")
    theirs = get_peft_model(tiny(family), config)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    theirs.save_pretrained(tmp_path)
    ours = lora.load(tiny(family), tmp_path)
    assert rel_err(logits(ours, batch()), logits(theirs, batch())) < 1e-5
    assert lora.count(ours).lora == sum(p.numel() for n, p in theirs.named_parameters() if "lora_" in n)


def test_a_bert_classifier_adapter_without_the_pooler_keeps_the_checkpoints_pooler(tmp_path):
    """PEFT's SEQ_CLS saves the classifier alone, as our files did before BERT's pooler joined the head: such a
    file loads with the pooler as the checkpoint has it (frozen); a file without the classifier is still refused."""
    from peft import LoraConfig, TaskType, get_peft_model

    theirs = get_peft_model(tiny("bert"), LoraConfig(task_type=TaskType.SEQ_CLS, r=2, target_modules=["query"]))
    with torch.no_grad():
        for p in (p for p in theirs.parameters() if p.requires_grad):
            p.normal_(0, 0.2)
    theirs.save_pretrained(tmp_path / "peft")
    ours = lora.load(tiny("bert"), tmp_path / "peft")
    assert rel_err(logits(ours, batch()), logits(theirs, batch())) < 1e-5
    assert not any(p.requires_grad for p in ours.bert.pooler.parameters())
    assert lora.count(ours).by_type["head"] == 32 * 2 + 2  # the classifier alone

    without_head = lora.apply(tiny("bert"), LoRAConfig(r=2, targets=("q",)))
    without_head.classifier.requires_grad_(False)
    lora.save(without_head, tmp_path / "ours")
    with pytest.raises(LoRAError, match="lacks 2 trained tensors this model has .first: classifier.bias"):
        lora.load(tiny("bert"), tmp_path / "ours")


# --- clear errors -------------------------------------------------------------------------------


def test_target_matching_nothing_names_family_and_its_weight_types(monkeypatch):
    from lora.families import FAMILIES as TABLE
    from lora.families import Family

    no_k = Family(name="bert-no-k", blocks="encoder.layer", weights={"q": ("attention.self.query",)}, embed="")
    monkeypatch.setitem(TABLE, "bert", no_k)
    with pytest.raises(LoRAError, match=r"target 'k' matches no module of this bert-no-k model; .* weight types q"):
        lora.apply(tiny("bert"), LoRAConfig(targets=("k",)))


def test_unsupported_architecture_is_named():
    from transformers import DistilBertConfig, DistilBertModel

    model = DistilBertModel(DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32, vocab_size=20))
    with pytest.raises(LoRAError, match="no LoRA family for model type 'distilbert'"):
        lora.apply(model, LoRAConfig())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, "rank for 'q' must be a positive integer"),
        ({"r": -2}, "rank for 'q' must be a positive integer"),
        ({"targets": ("query",)}, "unknown weight type 'query'"),
        ({"bias": "some"}, "bias must be one of"),
        ({"init": "xavier"}, "init must be one of"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"r": {"q": 2}, "targets": ("q", "v")}, "r per weight type must cover exactly"),
    ],
)
def test_bad_configs_fail_with_one_clear_line(kwargs, message):
    with pytest.raises(LoRAError, match=message):
        LoRAConfig(**kwargs)


def test_rank_larger_than_the_weight_and_layers_out_of_range():
    with pytest.raises(LoRAError, match="rank 64 for 'q' exceeds"):
        lora.apply(tiny("bert"), LoRAConfig(r=64))
    with pytest.raises(LoRAError, match="has 2 blocks"):
        lora.apply(tiny("bert"), LoRAConfig(layers=(5,)))


def test_applying_twice_is_refused():
    model = lora.apply(tiny("bert"), LoRAConfig())
    with pytest.raises(LoRAError, match="already has LoRA"):
        lora.apply(model, LoRAConfig())


def test_loading_into_another_architecture_or_shape_fails_clearly(tmp_path):
    from experiments.models import from_arch, model_conf

    lora.save(lora.apply(tiny("bert"), LoRAConfig(r=2)), tmp_path)
    with pytest.raises(LoRAError, match="trained on a bert model .* this model is llama"):
        lora.load(tiny("llama"), tmp_path)
    wider = from_arch({**model_conf("tiny_bert")["arch"], "hidden_size": 48}, head="seq_cls")
    with pytest.raises(LoRAError, match="does not fit this model: .* is \\(2, 32\\) in the file but \\(2, 48\\)"):
        lora.load(wider, tmp_path)


def test_corrupted_or_missing_adapter_file_fails_clearly(tmp_path):
    file = lora.save(lora.apply(tiny("bert"), LoRAConfig(r=2)), tmp_path / "a.safetensors")
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoRAError, match="not a readable safetensors file"):
        lora.load(tiny("bert"), file)
    with pytest.raises(LoRAError, match="no adapter at"):
        lora.load(tiny("bert"), tmp_path / "missing.safetensors")


def test_peft_adapter_with_unsupported_fields_is_refused(tmp_path):
    import json

    lora.save(lora.apply(tiny("llama"), LoRAConfig(r=2)), tmp_path, format="peft")
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(LoRAError, match="sets use_dora=True, which this library does not implement"):
        lora.load(tiny("llama"), tmp_path)


def test_gradients_equal_peft_on_gpt2_fused_slices(tmp_path):
    """The in-place slice update of c_attn back-propagates exactly as PEFT's block-structured B."""
    from peft import PeftModel

    ours = randomize_lora(lora.apply(tiny("gpt2"), LoRAConfig(r={"q": 2, "v": 3}, alpha=4, train_head=False)))
    lora.save(ours, tmp_path, format="peft")
    theirs = PeftModel.from_pretrained(tiny("gpt2"), tmp_path, is_trainable=True)
    x = batch()
    for model in (ours, theirs):
        model(**x, labels=x["input_ids"]).loss.backward()
    layer = dict(lora.lora_layers(ours))["transformer.h.1.attn.c_attn"]
    peft_a = theirs.base_model.model.transformer.h[1].attn.c_attn.lora_A["default"].weight.grad
    assert torch.allclose(layer.lora_A["q"].grad, peft_a[:2], rtol=1e-4, atol=1e-6)
    assert torch.allclose(layer.lora_A["v"].grad, peft_a[2:], rtol=1e-4, atol=1e-6)
    peft_b = theirs.base_model.model.transformer.h[1].attn.c_attn.lora_B["default"].weight.grad
    # Unequal slot scales (4/2 for q, 4/3 for v) are folded into PEFT's B, so its B gradient is ours / scale.
    assert torch.allclose(layer.lora_B["v"].grad, peft_b[64:, 2:] * 4 / 3, rtol=1e-4, atol=1e-6)


# --- regressions found in review -----------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama"])  # tied input and output embeddings
def test_unload_with_an_adapted_tied_embedding_keeps_outputs(family):
    model = randomize_lora(lora.apply(tiny(family), LoRAConfig(r=2, targets=("q", "embed"))), std=0.1)
    expected = logits(model, batch())
    lora.unload(model)
    assert rel_err(logits(model, batch()), expected) < 1e-5


def test_bf16_autocast_through_gpt2_fused_slices():
    model = randomize_lora(lora.apply(tiny("gpt2").train(), LoRAConfig(r={"q": 2, "v": 2})))
    x = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**x, labels=x["input_ids"]).loss
    loss.backward()
    assert all(layer.lora_B["v"].grad is not None for _, layer in lora.lora_layers(model))


def test_config_from_the_command_line_accepts_single_values():
    c = LoRAConfig.from_dict({"targets": "mlp_in", "layers": 3})
    assert (c.targets, c.layers) == (("mlp_in",), (3,))


def test_a_file_missing_trained_tensors_is_refused(tmp_path):
    from lora.files import read_safetensors, write_safetensors

    file = lora.save(lora.apply(tiny("bert"), LoRAConfig(r=2)), tmp_path / "a.safetensors")
    tensors, meta = read_safetensors(file)
    write_safetensors({k: v for k, v in tensors.items() if not k.startswith("classifier")}, meta, file)
    with pytest.raises(LoRAError, match="lacks 2 trained tensors this model has \\(first: classifier.bias\\)"):
        lora.load(tiny("bert"), file)


def test_peft_adapters_that_modify_the_base_are_refused(tmp_path):
    import json

    lora.save(lora.apply(tiny("llama"), LoRAConfig(r=2)), tmp_path, format="peft")
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "init_lora_weights": "pissa"}))
    with pytest.raises(LoRAError, match="init_lora_weights='pissa', which changes the base weights"):
        lora.load(tiny("llama"), tmp_path)


def test_a_write_that_fails_on_a_full_disk_names_the_file_and_the_cause(tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError("basic_ios::clear"); the one line must say what happened."""
    import shutil
    from collections import namedtuple

    from lora.files import atomic_path

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(100, 100, 0))
    with (
        pytest.raises(OSError, match=r"No space left on device \(basic_ios::clear") as err,
        atomic_path(tmp_path / "optimizer.pt"),
    ):
        raise RuntimeError("basic_ios::clear: iostream error")
    assert err.value.filename == str(tmp_path / "optimizer.pt") and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(100, 0, 100 << 20))
    with pytest.raises(RuntimeError, match="another failure"), atomic_path(tmp_path / "optimizer.pt"):
        raise RuntimeError("another failure")  # room on the disk: the error is left as it is


# --- PEFT adapters that used to be refused or loaded wrong (issue 19) ------------------------------------------


def _peft_trained(family: str, folder, **config):
    """A PEFT adapter with random B (and a changed modules_to_save copy), saved by PEFT itself."""
    from peft import LoraConfig, get_peft_model

    theirs = get_peft_model(tiny(family), LoraConfig(r=3, lora_alpha=6, fan_in_fan_out=family == "gpt2", **config))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    theirs.save_pretrained(folder)
    return theirs.eval()


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # PEFT's: the case under test
@pytest.mark.parametrize(("family", "targets", "embedding"), [("llama", ["q_proj", "v_proj"], "embed_tokens"),
                                                            ("gpt2", ["c_proj"], "wte")])  # fmt: skip
def test_a_peft_embedding_in_modules_to_save_leaves_the_tied_output_layer_as_peft_does(family, targets, embedding,
                                                                                        tmp_path):  # fmt: skip
    """Before: the saved embedding was written into the parameter the output layer shares; logits 1.3-2.7 off."""
    theirs = _peft_trained(family, tmp_path, target_modules=targets, modules_to_save=[embedding])
    ours = lora.load(tiny(family), tmp_path)
    assert rel_err(logits(ours, batch()), logits(theirs, batch())) < 1e-5
    assert ours.get_input_embeddings().weight is not ours.get_output_embeddings().weight
    torch.testing.assert_close(ours.get_output_embeddings().weight, tiny(family).get_output_embeddings().weight)


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_proj", "c_fc"]])
def test_peft_adapters_of_the_whole_fused_c_attn_load_exactly(targets, tmp_path):
    """PEFT's default GPT-2 targets: one A shared by the q, k, v slices, B split by rows (was refused)."""
    theirs = _peft_trained("gpt2", tmp_path, target_modules=targets)
    ours = lora.load(tiny("gpt2"), tmp_path)
    assert rel_err(logits(ours, batch()), logits(theirs, batch())) < 1e-5


def test_our_gpt2_q_v_adapter_survives_a_peft_resave(tmp_path):
    """PEFT re-saves without our header; the block-structured c_attn pair still loads exactly (was refused)."""
    from peft import PeftModel

    ours = randomize_lora(lora.apply(tiny("gpt2"), LoRAConfig(r={"q": 2, "v": 3}, alpha=4)))
    lora.save(ours, tmp_path / "ours", format="peft")
    PeftModel.from_pretrained(tiny("gpt2"), tmp_path / "ours").save_pretrained(tmp_path / "resaved")
    back = lora.load(tiny("gpt2"), tmp_path / "resaved")
    assert rel_err(logits(back, batch()), logits(ours, batch())) < 1e-5
