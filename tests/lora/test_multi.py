"""Many adapters on one base model: each row of a mixed batch equals its adapter run alone."""

import pytest
import torch
from conftest import batch, logits, tiny
from torch.utils._python_dispatch import TorchDispatchMode

import lora
from lora import LoRAConfig, LoRAError

# Adapters that differ in rank, targets and (for the encoders) their classifier head.
CONFIGS = {
    "a": LoRAConfig(r=2, alpha=4, targets=("q", "v")),
    "b": LoRAConfig(r=8, alpha=8, targets=("q", "k", "v", "o")),
    "c": LoRAConfig(r={"v": 4, "mlp_in": 2}, alpha=8),
}


def trained(family: str, config: LoRAConfig, seed: int) -> torch.nn.Module:
    """A LoRA model whose trainable parameters (factors and head) are all non-zero."""
    model = lora.apply(tiny(family), config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def save_adapters(family, folder) -> dict:
    return {n: lora.save(trained(family, c, seed=i + 1), folder / n) for i, (n, c) in enumerate(CONFIGS.items())}


@pytest.fixture
def adapters(family, tmp_path) -> dict:
    return save_adapters(family, tmp_path)


@pytest.fixture
def bert_adapters(tmp_path) -> dict:
    return save_adapters("bert", tmp_path)


def alone(family, adapter_file, inputs):
    model = tiny(family) if adapter_file is None else lora.load(tiny(family), adapter_file)
    return logits(model, inputs)


def test_each_row_equals_its_adapter_alone(family, adapters):
    inputs = batch(n=8)
    names = ["a", None, "b", "c", "a", "c", None, "b"]
    model = tiny(family)
    if family == "deberta-v2":  # W_q, W_k also project the relative positions, once for all rows
        bank = lora.multi.load(model, adapters)
        with bank.rows(names), pytest.raises(LoRAError, match="shared by all rows"):
            logits(model, inputs)
        bank.remove()
        names = ["c", None, "c", "c", None, None, "c", None]  # c adapts v and the MLP
    bank = lora.multi.load(model, adapters)
    with bank.rows(names):
        mixed = logits(model, inputs)
    for name in set(names):
        rows = [i for i, n in enumerate(names) if n == name]
        expected = alone(family, adapters.get(name), inputs)[rows]
        torch.testing.assert_close(mixed[rows], expected, atol=2e-5, rtol=1e-4)


def test_remove_gives_the_base_model_back(bert_adapters):
    adapters = bert_adapters
    inputs = batch()
    model = tiny("bert")
    before = logits(model, inputs)
    bank = lora.multi.load(model, adapters)
    with bank.rows(["a", "b", "c"]):
        assert not torch.allclose(logits(model, inputs), before)
    bank.remove()
    assert torch.equal(logits(model, inputs), before)
    assert not any(isinstance(m, lora.multi.AdapterBankLayer) for m in model.modules())


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", ["llama"])
def test_cost_does_not_grow_with_the_number_of_adapters(tmp_path, family):
    """The same kernels run for 2 adapters as for 12: rows are gathered, adapters are not looped over."""
    counts = {}
    for n in (2, 12):
        files = {f"t{i}": lora.save(trained(family, CONFIGS["a"], seed=i), tmp_path / f"{n}-{i}") for i in range(n)}
        model = tiny(family)
        bank = lora.multi.load(model, files)
        inputs = batch(n=12)
        with bank.rows([f"t{i % n}" for i in range(12)]), _CountOps() as ops, torch.no_grad():
            model(**inputs)
        counts[n] = ops.counts
    assert counts[2] == counts[12]
    assert counts[2]["bmm"] == 2 * 2 * 2  # q, v in each of 2 blocks: one gathered pair each


def test_generate_greedy_and_beam_match_single_adapter(tmp_path):
    """generate() expands rows for beams; each row still decodes as its adapter alone would."""
    files = {n: lora.save(trained("llama", c, seed=i + 1), tmp_path / n) for i, (n, c) in enumerate(CONFIGS.items())}
    inputs = batch(n=4, length=6)
    inputs["attention_mask"] = inputs["attention_mask"].flip(1)  # left padding, as for generation
    names = ["a", "b", None, "c"]
    for beams in (1, 3):
        kw = {"max_new_tokens": 6, "do_sample": False, "num_beams": beams, "pad_token_id": 0}
        model = tiny("llama")
        bank = lora.multi.load(model, files)
        with bank.rows(names), torch.no_grad():
            mixed = model.generate(**inputs, **kw)
        for i, name in enumerate(names):
            single = tiny("llama") if name is None else lora.load(tiny("llama"), files[name])
            with torch.no_grad():
                expected = single.generate(**inputs, **kw)
            assert torch.equal(mixed[i], expected[i]), (beams, name)


def test_bad_uses_are_one_line_errors(bert_adapters):
    adapters = bert_adapters
    model = tiny("bert")
    bank = lora.multi.load(model, adapters)
    with pytest.raises(LoRAError, match="unknown adapter 'zz'; this bank holds a, b, c"):
        bank.ids(["a", "zz"])
    with pytest.raises(LoRAError, match="inside `with bank.rows"):
        logits(model, batch())
    with bank.rows(["a", "b"]), pytest.raises(LoRAError, match="a batch of 3 rows but adapters named for 2"):
        logits(model, batch())
    with pytest.raises(LoRAError, match="already holds an adapter bank"):
        lora.multi.load(model, adapters)
    for name in ("../a", "a/b", "", ".hidden", "a..b"):
        with pytest.raises(LoRAError, match="not a plain name"):
            lora.multi.load(tiny("bert"), {name: adapters["a"]})
    with pytest.raises(LoRAError, match="no adapters given"):
        lora.multi.load(tiny("bert"), {})


def test_adapters_a_bank_cannot_hold_are_refused_and_the_model_is_left_plain(tmp_path):
    embed = lora.save(trained("llama", LoRAConfig(r=2, targets=("embed",)), 1), tmp_path / "e")
    bias = lora.save(trained("bert", LoRAConfig(r=2, bias="all"), 1), tmp_path / "b")
    other = lora.save(trained("gpt2", LoRAConfig(r=2), 1), tmp_path / "g")
    for family, file, message in (
        ("llama", embed, "adapts the embedding"),
        ("bert", bias, "also trains .*bias"),
        ("bert", other, "trained on a gpt2 model"),
    ):
        model = tiny(family)
        before = logits(model, batch())
        with pytest.raises(LoRAError, match=message):
            lora.multi.load(model, {"x": file})
        assert not any(True for _ in lora.lora_layers(model))
        assert torch.equal(logits(model, batch()), before)


def test_an_adapter_that_fails_half_way_leaves_the_model_plain(tmp_path):
    """Same architecture, other width: LoRA is applied before the shapes are found wrong."""
    from transformers import BertConfig, BertForSequenceClassification

    wide = BertForSequenceClassification(
        BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=128)
    )
    file = lora.save(lora.apply(wide, LoRAConfig(r=2)), tmp_path / "wide")
    model = tiny("bert")
    with pytest.raises(LoRAError, match="does not fit this model"):
        lora.multi.load(model, {"wide": file})
    assert not any(True for _ in lora.lora_layers(model))
