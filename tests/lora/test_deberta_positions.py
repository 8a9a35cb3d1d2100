"""DeBERTa's relative positions projected as microsoft/LoRA does (W0 alone for W_q) are part of the adapter's
state: gone with the adapter, chosen per row in a bank, refused where a merged or PEFT model cannot do it."""

import copy
import json
import pickle

import pytest
import torch
from conftest import batch, logits, tiny
from test_multi import trained

import lora
from lora import LoRAConfig, LoRAError
from lora.loralib_format import microsoft_deberta_positions

QV = LoRAConfig(r=2, alpha=4, targets=("q", "v"))
INPUTS = batch(n=4)


def microsoft(config: LoRAConfig, seed: int) -> torch.nn.Module:
    return microsoft_deberta_positions(trained("deberta-v2", config, seed))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Two adapters with microsoft's handling (a, b) and one without it (c), all adapting W_q."""
    folder = tmp_path_factory.mktemp("deberta")
    models = {
        "a": microsoft(QV, seed=1),
        "b": microsoft(LoRAConfig(r=4, alpha=8, targets=("q", "v")), seed=2),
        "c": trained("deberta-v2", QV, seed=3),
    }
    return {name: lora.save(model, folder / name) for name, model in models.items()}


@pytest.fixture(scope="module")
def alone(files) -> dict:
    """Each adapter's logits in a fresh model (None: the base model), on the first pass."""
    out = {name: logits(lora.load(tiny("deberta-v2"), file), INPUTS) for name, file in files.items()}
    return {**out, None: logits(tiny("deberta-v2"), INPUTS)}


def passes(model, n: int = 3) -> list[torch.Tensor]:
    return [logits(model, INPUTS) for _ in range(n)]


def as_transformers_computes(model) -> torch.Tensor:
    """The logits of a fresh plain model holding `model`'s weights (an unloaded model keeps the adapter's head)."""
    fresh = tiny("deberta-v2")
    fresh.load_state_dict(model.state_dict())
    return logits(fresh, INPUTS)


def has_patch(model) -> bool:
    return any("disentangled_attention_bias" in vars(m) for m in model.modules())


def test_the_handling_matters_on_this_model(files, alone):
    from lora.positions import remove_microsoft_positions

    plain = lora.load(tiny("deberta-v2"), files["a"])
    remove_microsoft_positions(plain)  # the same adapter, transformers' way
    assert (logits(plain, INPUTS) - alone["a"]).abs().max() > 1e-4


def test_unload_restores_transformers_method_exactly_on_every_pass(files, alone):
    model = lora.load(tiny("deberta-v2"), files["a"])
    assert all(torch.equal(out, alone["a"]) for out in passes(model))
    lora.unload(model, merged=False)
    expected = as_transformers_computes(model)
    for out in passes(model):
        assert torch.equal(out, expected)  # main: exact once, then 8e-5 off with query_proj a LoRA layer again
    assert not any(isinstance(m, lora.LoRALayer) for m in model.modules())
    assert not has_patch(model) and not hasattr(model, "lora_microsoft_deberta_positions")


def test_an_adapter_applied_after_unload_is_neither_the_old_one_nor_microsofts(files, alone, tmp_path):
    model = lora.load(tiny("deberta-v2"), files["a"])
    logits(model, INPUTS)
    lora.unload(model, merged=False)
    lora.load(model, files["c"])  # transformers' handling
    for out in passes(model):
        torch.testing.assert_close(out, alone["c"], atol=1e-6, rtol=0)
    saved = lora.save(model, tmp_path / "again")
    assert "relative_positions" not in json.loads(saved.with_suffix(".json").read_text())


@pytest.mark.parametrize(
    "names",
    [["a", None, "a", None], ["a", "b", None, "a"], ["c", "c", "c", "c"]],
    ids=["rows-without-adapter", "two-adapters", "transformers-way"],
)
def test_bank_rows_each_equal_their_adapter_alone_on_every_pass(files, alone, names):
    model = tiny("deberta-v2")
    bank = lora.multi.load(model, {n: files[n] for n in ("a", "b", "c")})
    for _ in range(3):
        with bank.rows(names):
            mixed = logits(model, INPUTS)
        for i, name in enumerate(names):
            torch.testing.assert_close(mixed[i], alone[name][i], atol=2e-5, rtol=1e-4)
    bank.remove()
    for out in passes(model, 2):
        assert torch.equal(out, alone[None])
    assert not has_patch(model)


def test_bank_refuses_rows_whose_positions_differ(files):
    model = tiny("deberta-v2")
    bank = lora.multi.load(model, files)
    with bank.rows(["a", "c", None, "a"]), pytest.raises(LoRAError, match="shared by all rows"):
        logits(model, INPUTS)


def test_reading_an_adapter_leaves_the_model_plain(files, alone):
    model = tiny("deberta-v2")
    lora.multi.read(model, "a", files["a"])
    assert not has_patch(model)
    assert all(torch.equal(out, alone[None]) for out in passes(model, 2))


def test_hot_swap_refuses_it_as_merge_does_and_leaves_the_model_as_it_was(files, alone):
    model = tiny("deberta-v2")
    with pytest.raises(LoRAError, match="microsoft's handling.*lora.multi"):
        lora.HotSwap(model, {"c": files["c"], "a": files["a"]})
    assert all(torch.equal(out, alone[None]) for out in passes(model, 2))
    with pytest.raises(LoRAError, match="merging would fold ΔW"):
        lora.merge(lora.load(tiny("deberta-v2"), files["a"]))


def test_peft_export_is_refused_in_one_line(files, tmp_path):
    model = lora.load(tiny("deberta-v2"), files["a"])
    with pytest.raises(LoRAError, match="PEFT cannot represent"):
        lora.save(model, tmp_path / "peft", format="peft")
    assert not (tmp_path / "peft").exists()
    v_only = microsoft(LoRAConfig(r=2, targets=("v",)), seed=4)  # W_q not adapted: nothing to differ
    assert (lora.save(v_only, tmp_path / "v", format="peft") / "adapter_config.json").exists()


def test_a_refused_merge_changes_no_weight():
    model = microsoft(LoRAConfig(r=2, targets=("embed", "q")), seed=5)  # the embedding merges before W_q refuses
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(LoRAError, match="merging would fold"):
        lora.merge(model)
    assert not any(layer.merged for _, layer in lora.lora_layers(model))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_deep_copy_is_independent_and_a_pickled_model_comes_back(files, alone):
    model = lora.load(tiny("deberta-v2"), files["a"])
    twin = copy.deepcopy(model)
    lora.unload(model, merged=False)
    expected = as_transformers_computes(model)
    torch.testing.assert_close(logits(twin, INPUTS), alone["a"], atol=1e-6, rtol=0)
    assert all(torch.equal(out, expected) for out in passes(model, 2))  # main: the twin put a LoRA layer back
    again = pickle.loads(pickle.dumps(twin))  # main: "Can't pickle local object"
    torch.testing.assert_close(logits(again, INPUTS), alone["a"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("format", ["lora", "peft"])
def test_loading_an_adapter_without_the_handling_over_one_with_it_turns_it_off(files, alone, format, tmp_path):
    file = lora.save(lora.load(tiny("deberta-v2"), files["c"]), tmp_path / "c", format=format)
    model = lora.load(tiny("deberta-v2"), files["a"])  # same config as c
    lora.load(model, file)
    torch.testing.assert_close(logits(model, INPUTS), alone["c"], atol=1e-6, rtol=0)


def test_one_row_batches_in_a_bank_use_their_adapters_handling(files):
    one = {k: v[1:2] for k, v in INPUTS.items()}
    model = tiny("deberta-v2")
    bank = lora.multi.load(model, files)
    for name in ("a", "c", None, "b"):
        with bank.rows([name]):
            mixed = logits(model, one)
        single = tiny("deberta-v2") if name is None else lora.load(tiny("deberta-v2"), files[name])
        torch.testing.assert_close(mixed, logits(single, one), atol=2e-5, rtol=1e-4)  # main: c off by 1.7e-3


def test_a_bank_that_refuses_an_adapter_leaves_no_handling_behind(alone, tmp_path):
    biased = lora.save(microsoft(LoRAConfig(r=2, targets=("q", "v"), bias="all"), seed=6), tmp_path / "biased")
    model = tiny("deberta-v2")
    with pytest.raises(LoRAError, match="also trains"):
        lora.multi.load(model, {"biased": biased})
    assert all(torch.equal(out, alone[None]) for out in passes(model, 2))  # main: a LoRA layer back from pass 2
    assert not has_patch(model)


def test_an_adapter_with_the_handling_is_refused_by_a_merged_model_before_anything_changes(files):
    """It used to replace the merged adapter's tensors first and refuse after (found trying cases anew)."""
    model = lora.load(tiny("deberta-v2"), files["c"])  # transformers' way: merging is allowed
    lora.merge(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(LoRAError, match="W0 alone.*merged model.*lora.unmerge"):
        lora.load(model, files["a"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
