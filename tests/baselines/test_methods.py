"""Every baseline on tiny models: what trains, the paper's parameter formulas, identity at start, save/load."""

import pytest
import torch
from conftest import batch

import baselines
import lora
from baselines.adapters import count_adapters
from experiments.models import build
from experiments.tasks.base import insert_special_tokens

D, L, FFN = 32, 2, 64  # the tiny models: hidden size, blocks, MLP width
APPLIES = {
    "full_ft": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "ft_top2": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "bitfit": ["bert", "roberta", "deberta", "gpt2"],
    "head_only": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "adapter_h": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "adapter_l": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "adapter_p": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "adapter_d": ["bert", "roberta", "deberta", "gpt2", "llama"],
    "prefix_embed": ["gpt2", "llama"],
    "prefix_layer": ["gpt2", "llama"],
    "lora_prefix_embed": ["gpt2", "llama"],
    "lora_prefix_layer": ["gpt2", "llama"],
}
OPTIONS = {"adapter_h": {"r": 4}, "adapter_l": {"r": 4}, "adapter_p": {"r": 4}, "adapter_d": {"r": 4, "drop_lower": 1},
           "prefix_embed": {"l_p": 3, "l_i": 2}, "prefix_layer": {"l_p": 3, "l_i": 2}, "ft_top2": {"blocks": 1},
           "lora_prefix_embed": {"r": 2, "l_p": 3, "l_i": 2},
           "lora_prefix_layer": {"r": 2, "l_p": 3, "l_i": 2}}  # fmt: skip
CASES = [(m, f) for m, fams in APPLIES.items() for f in fams]


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build(f"tiny_{family}", head="seq_cls").eval()
    model.config.pad_token_id = 0
    return model


def prepared(method: str, family: str, seed: int = 0):
    return baselines.prepare(tiny(family, seed), {"name": method, **OPTIONS.get(method, {})})


def inputs(model) -> dict:
    x = batch()
    if special := getattr(model, "special_tokens", None):
        x["input_ids"], x["attention_mask"] = insert_special_tokens(x["input_ids"], x["attention_mask"], special, 0)
    return x


def intended(method: str, name: str) -> bool:
    """Does the method mean to train this parameter? (independent of how it marks them)"""
    if name.startswith(("classifier", "score", "pooler.", "bert.pooler.")):  # task heads, with the poolers
        return True
    return {
        "full_ft": lambda: True,
        "ft_top2": lambda: any(f"{b}.1." in name for b in ("layer", "h", "layers")),  # blocks=1: the top block
        "bitfit": lambda: name.endswith(".bias"),
        "head_only": lambda: False,
        "prefix_embed": lambda: ".vectors" in name,
        "prefix_layer": lambda: ".vectors" in name,
        "lora_prefix_embed": lambda: ".vectors" in name or ".lora_" in name,
        "lora_prefix_layer": lambda: ".vectors" in name or ".lora_" in name,
    }.get(method, lambda: ".adapter." in name)()


@pytest.mark.parametrize("method, family", CASES)
def test_only_the_intended_parameters_receive_gradients(method, family):
    model = prepared(method, family).train()
    model(**inputs(model)).logits.pow(2).mean().backward()
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable == {n for n in names if intended(method, n)} == with_grad


def expected_count(method: str, family: str, model) -> int:
    """The paper's formulas (Section 5.1), task head excluded."""
    o = OPTIONS.get(method, {})
    if method.startswith("adapter"):
        r = o["r"]
        n_adapters = {
            "adapter_h": 2 * L,
            "adapter_l": L,
            "adapter_p": L,
            "adapter_d": 2 * (L - o.get("drop_lower", 0)),
        }[method]
        n_ln = L if method == "adapter_l" else 0
        return n_adapters * (2 * D * r + r + D) + 2 * n_ln * D
    if method.endswith("prefix_embed"):
        return D * (o["l_p"] + o["l_i"])
    if method.endswith("prefix_layer"):
        return L * D * (o["l_p"] + o["l_i"])
    raise KeyError(method)


@pytest.mark.parametrize("method, family", [c for c in CASES if c[0].startswith(("adapter", "prefix"))])
def test_trainable_count_equals_the_papers_formula(method, family):
    model = prepared(method, family)
    c = lora.count(model)
    assert c.trainable - c.by_type.get("head", 0) == expected_count(method, family, model)
    if method.startswith("adapter"):
        assert count_adapters(model)[0] * (2 * D * 4 + 4 + D) <= c.trainable


def test_houlsby_with_layernorms_adds_2_lhat_ln_d():
    model = baselines.prepare(tiny("bert"), {"name": "adapter_h", "r": 4, "train_layernorm": True})
    c = lora.count(model)
    assert count_adapters(model) == (2 * L, 2 * L)
    assert c.trainable - c.by_type["head"] == 2 * L * (2 * D * 4 + 4 + D) + 2 * (2 * L) * D


def test_bitfit_and_top2_counts_in_closed_form():
    # BERT block biases: q, k, v, attention out, 2 LayerNorms (d each), MLP in (I), MLP out (d);
    # plus the embedding LayerNorm's (the pooler's is the head's).
    c = lora.count(prepared("bitfit", "bert"))
    assert c.trainable - c.by_type["head"] == L * (7 * D + FFN) + D
    block = 4 * (D * D + D) + 2 * 2 * D + (D * FFN + FFN) + (FFN * D + D)
    c = lora.count(baselines.prepare(tiny("bert"), {"name": "ft_top2"}))  # the default: the top 2 blocks
    assert c.trainable - c.by_type["head"] == 2 * block


def test_head_only_trains_berts_pooler_and_classifier_alone():
    c = lora.count(prepared("head_only", "bert"))
    assert c.trainable == c.by_type["head"] == (D * D + D) + (D * 2 + 2)


@pytest.mark.parametrize("method, family", [c for c in CASES if c[0].startswith("adapter")])
def test_adapters_start_as_the_identity(method, family):
    base = tiny(family)
    x = batch()
    with torch.no_grad():
        assert torch.equal(prepared(method, family)(**x).logits, base(**x).logits)


@pytest.mark.parametrize("method, family", CASES)
def test_save_load_round_trip(method, family, tmp_path):
    model = prepared(method, family)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    baselines.save(model, tmp_path / "a.safetensors")
    fresh = baselines.load(tiny(family), tmp_path / "a.safetensors")
    with torch.no_grad():
        assert torch.equal(fresh(**inputs(fresh)).logits, model(**inputs(model)).logits)


def test_methods_refuse_models_they_do_not_apply_to():
    with pytest.raises(baselines.MethodError, match="'bitfit' does not support 'llama' models .*no bias vectors"):
        baselines.prepare(tiny("llama"), {"name": "bitfit"})
    with pytest.raises(baselines.MethodError, match="'prefix_layer' does not support 'bert' models .*decoders"):
        baselines.prepare(tiny("bert"), {"name": "prefix_layer"})
    with pytest.raises(baselines.MethodError, match="drop_lower=2 must leave at least one of the 2 blocks"):
        baselines.prepare(tiny("bert"), {"name": "adapter_d", "drop_lower": 2})


def test_latency_benchmark_compares_models_that_compute_the_same_function():
    from benchmarks.latency import configs

    models = configs(build("tiny_gpt2", head="base").eval(), "0.5M")
    ids = torch.randint(3, 120, (2, 9))
    with torch.no_grad():
        outs = [m(input_ids=ids).last_hidden_state for m in models.values()]
    assert len(outs) == 4 and all(torch.equal(o, outs[0]) for o in outs)


@pytest.mark.parametrize("method", ["prefix_layer", "lora_prefix_layer"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prefix_layer_starts_from_the_activations_of_real_tokens(method, family):
    """Random N(0, 0.02) vectors over a Llama's hidden states put SmolLM2-135M's dev loss at 13.8 before training
    (2.2 without them); PreLayer now starts from what the model computes for real tokens: the special tokens,
    run as a sequence, give exactly the hidden states of those real tokens at every block."""
    model = prepared(method, family)
    vocab, count = model.config.vocab_size, 3 + 2
    real = torch.linspace(0, vocab - 1, count).long()
    special = torch.arange(vocab, vocab + count)
    with torch.no_grad():
        want = model(input_ids=real[None], output_hidden_states=True).hidden_states
        got = model(input_ids=special[None], output_hidden_states=True).hidden_states
    assert len(got) == L + 1
    for block, (a, b) in enumerate(zip(want, got, strict=True)):
        assert torch.allclose(a, b, atol=1e-5), block


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("ft_top2", {"blocks": 0}, r"method.blocks=0 must be 1 to 2 \(the model has 2 blocks\)"),  # was: every block
        ("ft_top2", {"blocks": -1}, r"method.blocks=-1 must be 1 to 2"),  # was: every block but the first
        ("ft_top2", {"blocks": 3}, r"method.blocks=3 must be 1 to 2"),  # was: every block, silently
        ("ft_top2", {"blocks": 1.5}, r"method.blocks must be a whole number .*got 1.5"),  # was: int() -> 1
        ("ft_top2", {"blocks": True}, r"method.blocks must be a whole number .*got True"),  # was: 1
        ("adapter_h", {"r": 2.7}, r"method.r must be a whole number .*got 2.7"),  # was: int() -> r = 2
        ("adapter_p", {"r": "4"}, r"method.r must be a whole number .*got '4'"),  # was: text read as a number
        ("prefix_embed", {"l_p": -2, "l_i": 8}, r"method.l_p=-2 must be 0 or more"),
        ("prefix_embed", {"l_p": 2.5}, r"method.l_p must be a whole number"),  # was: int() -> 2
    ],
)
def test_every_integer_method_option_is_checked_for_type_and_range(method, options, message):
    family = "gpt2" if "prefix" in method else "bert"
    with pytest.raises(baselines.MethodError, match=message):
        baselines.prepare(tiny(family), {"name": method, **options})


def test_ft_top2_blocks_counts_from_the_top_and_zero_is_refused_before_loading():
    """`blocks[-0:]` trained all 17,154 parameters of tiny BERT for blocks=0; one block trains 8,544 and the head
    1,122 (the classifier's 66, the pooler's 1,056)."""
    c = lora.count(baselines.prepare(tiny("bert"), {"name": "ft_top2", "blocks": 1}))
    assert (c.trainable, c.by_type["head"]) == (8544 + 1122, 1122)
    with pytest.raises(baselines.MethodError, match="method.blocks=0 must be 1 to 24"):
        baselines.check("ft_top2", "gpt2", {"name": "ft_top2", "blocks": 0}, blocks=24)  # from the config alone
    baselines.check("ft_top2", "gpt2", {"name": "ft_top2", "blocks": 24}, blocks=24)


def test_prefix_tokens_that_fill_the_models_positions_are_refused_before_training():
    """l_p=100 on a 64-position GPT-2 trained, then stopped at decoding with "lower task.max_length"."""
    with pytest.raises(baselines.MethodError, match="l_p \\+ l_i = 108 special tokens leave no room .* 64 positions"):
        baselines.prepare(build("tiny_gpt2", head="causal_lm"), {"name": "prefix_embed", "l_p": 100, "l_i": 8})
