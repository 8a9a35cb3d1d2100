"""microsoft/LoRA's checkpoints: made by loralib 0.1.2 itself in microsoft's key layout, read by
`lora.load_loralib` into plain transformers models, against loralib's own outputs."""

import copy

import pytest
import torch
from conftest import batch, logits, tiny

import lora
from lora import LoRAError

loralib = pytest.importorskip("loralib", reason="loralib==0.1.2 is a test dependency (pip install -e '.[dev]')")
ALPHA = 16


def randomized(module, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def gpt2_with_merged_linear(model, r: int):
    """Microsoft's GPT-2: c_attn as loralib.MergedLinear(enable_lora=[True, False, True], fan_in_fan_out)."""
    reference, state = copy.deepcopy(model), {}
    for i, block in enumerate(reference.transformer.h):
        conv = block.attn.c_attn
        d_in, d_out = conv.weight.shape
        merged = loralib.MergedLinear(d_in, d_out, r=r, lora_alpha=ALPHA, enable_lora=[True, False, True],
                                      fan_in_fan_out=True, merge_weights=False)  # fmt: skip
        with torch.no_grad():
            merged.weight.copy_(conv.weight)  # fan_in_fan_out: stored (in, out) like Conv1D
            merged.bias.copy_(conv.bias)
        block.attn.c_attn = randomized(merged, seed=i)
        state[f"module.transformer.h.{i}.attn.c_attn.lora_A"] = merged.lora_A.detach().clone()
        state[f"module.transformer.h.{i}.attn.c_attn.lora_B"] = merged.lora_B.detach().clone()
    return reference.eval(), {"model_state_dict": state}  # as microsoft's gpt2_ft.py saves it, under DDP


def encoder_with_linear(model, family: str, r: int):
    """Microsoft's NLU models: query and value as loralib.Linear, the classifier saved beside them."""
    names = {"roberta": ("query", "value"), "deberta-v2": ("query_proj", "value_proj")}[family]
    reference, state = copy.deepcopy(model), {}
    prefix = model.base_model_prefix
    for i, layer in enumerate(getattr(reference, prefix).encoder.layer):
        for j, name in enumerate(names):
            old = getattr(layer.attention.self, name)
            new = loralib.Linear(old.in_features, old.out_features, r=r, lora_alpha=ALPHA, merge_weights=False)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.copy_(old.bias)
            setattr(layer.attention.self, name, randomized(new, seed=10 * i + j))
            key = f"{prefix}.encoder.layer.{i}.attention.self.{name}"
            state[f"{key}.lora_A"], state[f"{key}.lora_B"] = new.lora_A.detach().clone(), new.lora_B.detach().clone()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name.split(".")[0] in ("classifier", "pooler"):
                p.add_(0.5)  # a trained head, unlike the fresh model's
                state[name] = p.detach().clone()
    return reference.eval(), state


def microsofts_deberta(reference):
    """microsoft/LoRA's one change to DeBERTa-v2's attention, made to transformers' own source: the relative
    positions' query projection is `nn.Linear.forward(self.query_proj, rel_embeddings)` (W0 only, since its
    loralib layers never merge), where transformers calls `self.query_proj(rel_embeddings)`."""
    import inspect
    import textwrap
    import types

    from transformers.models.deberta_v2 import modeling_deberta_v2 as hf

    source = textwrap.dedent(inspect.getsource(hf.DisentangledSelfAttention.disentangled_attention_bias))
    assert source.count("self.query_proj(rel_embeddings)") == 1, "transformers changed: update this oracle"
    source = source.replace("self.query_proj(rel_embeddings)", "nn.Linear.forward(self.query_proj, rel_embeddings)")
    scope = dict(vars(hf))
    exec(source, scope)
    for module in reference.modules():
        if isinstance(module, hf.DisentangledSelfAttention):
            module.disentangled_attention_bias = types.MethodType(scope["disentangled_attention_bias"], module)
    return reference


def test_gpt2_merged_linear_checkpoint_matches_loralib(tmp_path):
    model = tiny("gpt2")
    reference, state = gpt2_with_merged_linear(model, r=4)
    torch.save(state, tmp_path / "gpt2_md_lora_e2e.pt")
    ours = lora.load_loralib(tiny("gpt2"), tmp_path / "gpt2_md_lora_e2e.pt", alpha=ALPHA).eval()
    torch.testing.assert_close(logits(ours, batch()), logits(reference, batch()), atol=1e-5, rtol=1e-5)
    wrong = lora.load_loralib(tiny("gpt2"), tmp_path / "gpt2_md_lora_e2e.pt", alpha=ALPHA, fused=("q", "k")).eval()
    assert (logits(wrong, batch()) - logits(reference, batch())).abs().max() > 1e-3  # the slices matter
    assert lora.count(ours).lora == sum(t.numel() for t in state["model_state_dict"].values())


@pytest.mark.parametrize("family", ["roberta", "deberta-v2"])
def test_encoder_linear_checkpoint_with_its_head_matches_loralib(family, tmp_path):
    from conftest import FAMILIES

    from experiments.models import build

    name = FAMILIES[family][0]
    torch.manual_seed(0)
    model = build(name, head="seq_cls").eval()
    reference, state = encoder_with_linear(model, family, r=2)
    if family == "deberta-v2":  # microsoft's checkpoints come from microsoft's DeBERTa
        transformers_way = logits(reference, batch())
        reference = microsofts_deberta(reference)
        assert (logits(reference, batch()) - transformers_way).abs().max() > 1e-3  # the option matters here
    torch.save(state, tmp_path / "lora.bin")
    torch.manual_seed(1)  # another random head: the file's must replace it
    ours = lora.load_loralib(build(name, head="seq_cls"), tmp_path / "lora.bin", alpha=ALPHA).eval()
    assert (logits(reference, batch()) - logits(model, batch())).abs().max() > 1e-2  # LoRA and head matter here
    torch.testing.assert_close(logits(ours, batch()), logits(reference, batch()), atol=1e-5, rtol=1e-5)


def test_without_microsofts_projection_deberta_follows_transformers_and_merging_is_refused_with_it(tmp_path):
    from experiments.models import build

    torch.manual_seed(0)
    model = build("tiny_deberta", head="seq_cls").eval()
    reference, state = encoder_with_linear(model, "deberta-v2", r=2)
    torch.save(state, tmp_path / "lora.bin")
    plain = lora.load_loralib(build("tiny_deberta", head="seq_cls"), tmp_path / "lora.bin", ALPHA,
                              microsoft_deberta=False).eval()  # fmt: skip
    torch.testing.assert_close(logits(plain, batch()), logits(reference, batch()), atol=1e-5, rtol=1e-5)
    ours = lora.load_loralib(build("tiny_deberta", head="seq_cls"), tmp_path / "lora.bin", ALPHA)
    with pytest.raises(LoRAError, match="merging would fold ΔW into them"):
        lora.merge(ours)


def test_wrong_alpha_shape_head_or_pickle_is_one_line(tmp_path):
    from experiments.models import build

    reference, state = gpt2_with_merged_linear(tiny("gpt2"), r=4)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(LoRAError, match="does not store alpha"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "a.pt", alpha=0)
    with pytest.raises(LoRAError, match="pickled checkpoint .* lora.load_loralib"):
        lora.load(tiny("gpt2"), tmp_path / "a.pt")
    from transformers import GPT2Config, GPT2LMHeadModel

    other = GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=64, n_embd=48, n_layer=2, n_head=4))
    with pytest.raises(LoRAError, match="does not fit this model: .* is \\(4, 32\\) in the file but \\(4, 48\\)"):
        lora.load_loralib(other, tmp_path / "a.pt", alpha=ALPHA)
    torch.manual_seed(0)
    _, encoder_state = encoder_with_linear(build("tiny_roberta", head="seq_cls"), "roberta", r=2)
    torch.save({k: v for k, v in encoder_state.items() if "lora_" in k}, tmp_path / "no_head.bin")
    with pytest.raises(LoRAError, match="holds no task head for this model's classifier"):
        lora.load_loralib(build("tiny_roberta", head="seq_cls"), tmp_path / "no_head.bin", alpha=ALPHA)
    torch.save({"x": copy.deepcopy}, tmp_path / "code.pt")  # a pickle that would run code
    with pytest.raises(LoRAError, match="not a checkpoint of plain tensors"):
        lora.load_loralib(tiny("gpt2"), tmp_path / "code.pt", alpha=ALPHA)


def test_a_saved_microsoft_deberta_model_loads_with_microsofts_projection_again(tmp_path):
    from experiments.models import build

    torch.manual_seed(0)
    reference, state = encoder_with_linear(build("tiny_deberta", head="seq_cls").eval(), "deberta-v2", r=2)
    torch.save(state, tmp_path / "lora.bin")
    ours = lora.load_loralib(build("tiny_deberta", head="seq_cls"), tmp_path / "lora.bin", ALPHA).eval()
    lora.save(ours, tmp_path / "ours")
    again = lora.load(build("tiny_deberta", head="seq_cls"), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(again, batch()), logits(microsofts_deberta(reference), batch()), atol=1e-5,
                               rtol=1e-5)  # fmt: skip
