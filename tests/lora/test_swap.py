"""Hot swap on a merged model: after any number of swaps, the weights of a single merge."""

import pytest
import torch
from conftest import batch, logits, tiny
from test_multi import CONFIGS, save_adapters

import lora
from lora import LoRAError


def weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def merged_once(family, file, dtype):
    model = tiny(family).to(dtype)
    return weights(model if file is None else lora.unload(lora.load(model, file)))


def max_drift(model, reference) -> float:
    return max((p.float() - reference[n].float()).abs().max().item() for n, p in model.named_parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_exact_swaps_give_the_bits_of_one_merge(tmp_path, dtype):
    files = save_adapters("gpt2", tmp_path)  # c_attn: q, k, v slices of one fused weight
    model = tiny("gpt2").to(dtype)
    swap = lora.HotSwap(model, files)
    order = [*CONFIGS, None] * 40
    for name in order:
        swap.activate(name)
    for name in ("b", None, "a"):
        swap.activate(name)
        assert max_drift(model, merged_once("gpt2", files.get(name), dtype)) == 0.0, name


def test_in_place_swaps_drift_in_bf16_which_exact_ones_do_not(tmp_path):
    files = save_adapters("llama", tmp_path)
    drift = {}
    for exact in (True, False):
        model = tiny("llama").to(torch.bfloat16)
        swap = lora.HotSwap(model, files, exact=exact)
        for _ in range(100):
            swap.activate("a")
            swap.activate("b")
        drift[exact] = max_drift(model, merged_once("llama", files["b"], torch.bfloat16))
    assert drift[True] == 0.0
    assert drift[False] > 0.0  # each in-place swap rounds W once more


def test_swapping_heads_gives_each_adapters_logits(tmp_path):
    files = save_adapters("bert", tmp_path)
    inputs = batch()
    model = tiny("bert")
    swap = lora.HotSwap(model, files)
    for name in ("a", "c", "b", None, "a"):
        swap.activate(name)
        single = tiny("bert") if name is None else lora.load(tiny("bert"), files[name])
        torch.testing.assert_close(logits(model, inputs), logits(single, inputs), atol=1e-5, rtol=1e-5)


def test_unknown_adapter_is_refused(tmp_path):
    swap = lora.HotSwap(tiny("bert"), save_adapters("bert", tmp_path))
    with pytest.raises(LoRAError, match="unknown adapter 'zz'; loaded: a, b, c"):
        swap.activate("zz")


def test_an_adapted_tied_embedding_swaps_as_lora_merge_merges_it(tmp_path):
    """main: refused with "serve it merged, not in a bank" (what HotSwap is); the output layer keeps W0."""
    from test_multi import trained

    file = lora.save(trained("gpt2", lora.LoRAConfig(r=2, targets=("embed", "q")), seed=1), tmp_path / "e")
    model = tiny("gpt2")
    swap = lora.HotSwap(model, {"e": file})
    for name in ("e", None, "e"):
        swap.activate(name)
    assert max_drift(model, merged_once("gpt2", file, torch.float32)) == 0.0
    swap.activate(None)
    assert torch.equal(logits(model, batch()), logits(tiny("gpt2"), batch()))


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_adapters_that_train_biases_swap_exactly(tmp_path, bias):
    """main: refused with "a bank shares the base's weights, so serve this one merged" (what HotSwap is)."""
    from test_multi import trained

    files = {n: lora.save(trained("bert", lora.LoRAConfig(r=2, bias=bias), seed=s), tmp_path / n) for n, s in
             (("a", 1), ("b", 2))}  # fmt: skip
    model = tiny("bert")
    swap = lora.HotSwap(model, files)
    for name in ("a", "b", None, "b", "a"):
        swap.activate(name)
        assert max_drift(model, merged_once("bert", files.get(name), torch.float32)) == 0.0, name


def test_an_adapter_is_not_stacked_on_the_one_swapped_in(tmp_path):
    """main: lora.load and lora.multi.load on a swapped model silently computed W0 + ΔW_a + ΔW_b."""
    files = save_adapters("bert", tmp_path)
    model = tiny("bert")
    swap = lora.HotSwap(model, {"a": files["a"]})
    swap.activate("a")
    for stack in (lambda: lora.load(model, files["b"]), lambda: lora.multi.load(model, {"b": files["b"]})):
        with pytest.raises(LoRAError, match="'a' is merged into this model's weights by lora.HotSwap"):
            stack()
    swap.activate(None)
    torch.testing.assert_close(
        logits(lora.load(model, files["b"]), batch()), logits(lora.load(tiny("bert"), files["b"]), batch())
    )
