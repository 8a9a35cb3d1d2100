"""Packed forwards (experiments/packing.py): a batch's sentences end to end in a few rows give the logits and the
gradients of the padded batch, for every family and attention kernel packing supports.

That a packed run trains to the weights of an unpacked one under every engine, and resumes to the same bits, is
tested where the engines are (test_distributed.py's tiny-BERT runs).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lora
from experiments import cpu_dropout, engines, packing
from experiments.models import from_arch
from experiments.runs import RunError

ARCH = {"vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 80, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}  # fmt: skip
LENGTHS = [5, 17, 3, 40, 9, 9, 1, 28, 2]  # rows of 48: 40; 28 + 17 + 3; 9 + 9 + 5 + 2 + 1 (and a padded tail)


def classifier(model_type: str, attention: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    model = from_arch({"model_type": model_type, **ARCH}, "seq_cls", 3, None, seed)
    model.set_attn_implementation(attention)
    return lora.apply(model, lora.LoRAConfig(r=4, alpha=8, init="gaussian"))  # B random too: ΔW is not zero


def padded_batch(model, lengths=LENGTHS, pairs: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded random sentences (pad tokens in the padding, second segments of pairs as BERT marks them)."""
    g = torch.Generator().manual_seed(seed)
    pad = model.config.pad_token_id or 0
    ids = torch.full((len(lengths), max(lengths)), pad)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, model.config.vocab_size, (n,), generator=g)
        mask[i, :n] = 1
        if pairs:
            types[i, n // 2 : n] = 1
    return {"input_ids": ids, "attention_mask": mask, **({"token_type_ids": types} if pairs else {})}


def logits_and_grads(model, batch, labels):
    model.zero_grad()
    logits = model(**batch).logits
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_packed_logits_and_gradients_equal_the_padded_ones(model_type, attention):
    model = classifier(model_type, attention)
    batch, labels = padded_batch(model), torch.arange(len(LENGTHS)) % 3
    padded = logits_and_grads(model, batch, labels)
    packer = packing.enable(model)
    packed = logits_and_grads(model, batch, labels)
    assert packer.first is None  # the call is over: the next one may be anything
    packer.remove()
    again = logits_and_grads(model, batch, labels)
    torch.testing.assert_close(packed[0], padded[0], rtol=0, atol=1e-6)
    for name, grad in padded[1].items():
        torch.testing.assert_close(packed[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(again[0], padded[0])  # removed: the padded forward again, bitwise
    # packed means packed: the rows hold fewer tokens than the padded batch
    inputs, _ = packing.pack(batch, pad_id=0, start=0)
    assert inputs["input_ids"].numel() == 3 * 48 < batch["input_ids"].numel() == 9 * 40


def test_left_padding_and_rows_wider_than_the_model_positions():
    """Positions count over the mask (left padding packs as right padding does; counted by column, it would not),
    and a row rounded up past the model's last position (40 positions, a sentence of 38, rows of 48) keeps its
    padded tail inside them."""
    model = from_arch({"model_type": "bert", **ARCH, "max_position_embeddings": 40}, "seq_cls", 3, None, 0).eval()
    right = padded_batch(model, lengths=[38, 5, 12, 1], pairs=False)
    lengths = right["attention_mask"].sum(1).tolist()
    left = {k: torch.stack([torch.roll(row, len(row) - n) for row, n in zip(v, lengths, strict=True)])
            for k, v in right.items()}  # fmt: skip
    with torch.no_grad():
        padded = model(**right).logits
        packing.enable(model)
        for batch in (right, left):
            torch.testing.assert_close(model(**batch).logits, padded, rtol=0, atol=1e-6)


def test_packing_under_bf16_with_attention_in_fp32():
    """The engines' bf16 path on a CPU (autocast, SDPA computing in fp32): packed within bf16 rounding of padded."""
    model = engines.attention_in_fp32(classifier("bert"))
    batch = padded_batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        padded = model(**batch).logits.float()
        packing.enable(model)
        packed = model(**batch).logits.float()
    assert (packed - padded).abs().max() < 0.02 * padded.abs().max()


def block_diagonal(rows: int, width: int, cuts: list[int]) -> torch.Tensor:
    """A packed attention mask (True: attend) of sentences ending at `cuts`, the row's tail one token each."""
    segment = torch.arange(width)
    for k, end in enumerate(sorted(cuts, reverse=True)):
        segment[:end] = -1 - k
    mask = segment[:, None] == segment[None, :]
    return mask.expand(rows, 1, width, width)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_in_training_is_softmax_then_dropout_then_values(dtype):
    """`packing.attention` in training: softmax(q k^T s + mask), dropped with cpu_dropout's mask for the same
    seed, times v, in fp32 whatever the projections' dtype; without dropout SDPA, the same formula; in
    evaluation SDPA in the projections' dtype."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 4, 16, 8, generator=g).to(dtype) for _ in range(3))
    mask, module, s = block_diagonal(3, 16, [5, 12]), torch.nn.Module(), 0.3
    scores = (q.float() @ k.float().transpose(-1, -2) * s).masked_fill(~mask, float("-inf")).softmax(-1)
    torch.manual_seed(5)
    keep = cpu_dropout.keep_mask(scores.shape, 0.2, torch.float32)
    for p, expected in ((0.2, (scores * keep) @ v.float()), (0.0, scores @ v.float())):
        torch.manual_seed(5)
        out, _ = packing.attention(module, q, k, v, mask, dropout=p, scaling=s)
        assert out.dtype == dtype and out.shape == (3, 16, 4, 8)
        torch.testing.assert_close(out, expected.transpose(1, 2).to(dtype), rtol=0, atol=1e-6)
    out, _ = packing.attention(module.eval(), q, k, v, mask, dropout=0.0, scaling=s)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), (scores @ v.float()).transpose(1, 2), rtol=0.02, atol=0.02)


def test_packed_training_draws_dropout_with_numpy_and_remove_puts_torchs_back():
    model = lora.apply(from_arch({"model_type": "bert", **ARCH, "hidden_dropout_prob": 0.1,
                                  "attention_probs_dropout_prob": 0.1}, "seq_cls", 3, None, 0),
                       lora.LoRAConfig(r=4, alpha=8, dropout=0.1))  # fmt: skip
    batch = padded_batch(model)
    before = sum(type(m) is torch.nn.Dropout for m in model.modules())
    packer = packing.enable(model)
    assert model.config._attn_implementation == packing.ATTENTION
    assert sum(type(m) is cpu_dropout.Dropout for m in model.modules()) == before > 6  # the LoRA layers' too
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(model(**batch).logits)
    assert torch.equal(*runs)  # the seed decides the masks
    assert not torch.equal(runs[0], model.eval()(**batch).logits)
    packer.remove()
    assert model.config._attn_implementation == "sdpa"
    assert sum(type(m) is torch.nn.Dropout for m in model.modules()) == before


def test_evaluation_widens_rows_training_keeps_them_narrow():
    """Four sentences of 17: one to a row of 32 in training (attention grows with the width), two to a row of 48
    in evaluation, with the padded batch's logits."""
    model = classifier("bert")
    batch = padded_batch(model, lengths=[17] * 4, pairs=False)
    seen = []
    model.bert.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple((a or [kw["input_ids"]])[0].shape)),
                                         with_kwargs=True)  # fmt: skip
    with torch.no_grad():
        padded = model.eval()(**batch).logits
        packing.enable(model)
        packed = model(**batch).logits
        model.train()(**batch)
    assert seen == [(4, 17), (2, 48), (4, 32)]
    torch.testing.assert_close(packed, padded, rtol=0, atol=1e-6)


def test_the_wrong_position_numbering_is_caught():
    """RoBERTa numbers positions from pad_token_id + 1: packed from 0 instead, the logits move (the test above
    would fail)."""
    model = classifier("roberta")
    batch = padded_batch(model)
    with torch.no_grad():
        padded = model(**batch).logits
        packer = packing.Packer(model, packing.Packable("classifier", "zero"))
        wrong = model(**batch).logits
        packer.remove()
    assert (wrong - padded).abs().max() > 1e-3


def test_calls_that_are_not_padded_batches_pass_through():
    model = classifier("bert")
    batch = padded_batch(model, pairs=False)
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"]).logits
        packing.enable(model)
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, plain)  # no mask: nothing to pack by


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 70), min_size=1, max_size=40), start=st.sampled_from([0, 2]))
def test_every_token_is_placed_once_at_its_position(lengths, start):
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = 1000 * (i + 1) + torch.arange(n)  # sentence i, token k: 1000 (i + 1) + k
        mask[i, :n] = 1
    inputs, first = packing.pack({"input_ids": ids, "attention_mask": mask}, pad_id=0, start=start)
    rows, width = inputs["input_ids"].shape
    assert width % packing.ROW_MULTIPLE == 0 and width - packing.ROW_MULTIPLE < max(lengths) <= width
    flat, positions = inputs["input_ids"].flatten(), inputs["position_ids"].flatten()
    assert sorted(flat[flat > 0].tolist()) == sorted(ids[mask.bool()].tolist())  # each real token once
    for i, n in enumerate(lengths):
        at = int(first[i])
        assert flat[at : at + n].tolist() == ids[i, :n].tolist()  # end to end, in order, in one row
        assert positions[at : at + n].tolist() == list(range(start, start + n))
        assert at // width == (at + n - 1) // width
    assert rows <= 2 * sum(lengths) / width + 1  # first-fit decreasing: all rows but one over half full


def test_resolve_refuses_what_cannot_pack_in_one_line():
    assert packing.resolve(None, "roberta", "adapter_h", "seq_cls") is True
    assert packing.resolve(False, "bert", "lora", "seq_cls") is False
    assert packing.resolve(None, "bert", "prefix_layer", "seq_cls") is False
    with pytest.raises(RunError, match="method prefix_layer changes the sequence; set trainer.packing=null"):
        packing.resolve(True, "bert", "prefix_layer", "seq_cls")
    with pytest.raises(RunError, match="head is causal_lm"):
        packing.resolve(True, "bert", "lora", "causal_lm")
