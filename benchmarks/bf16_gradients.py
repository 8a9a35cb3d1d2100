"""bf16 autocast against fp32: the LoRA gradients of SmolLM2-135M, ours and PEFT's with the same A and B.

    OMP_NUM_THREADS=1 python -m benchmarks.bf16_gradients

Inputs: 4 x 32 random token ids (what benchmarks.lora_step trains on) and the first 4 E2E training pairs; A as
our init=gaussian draws it (std 1/r) and small (std 0.02), B random (std 0.02) so that A has a gradient too. Prints
each gradient's cosine and relative difference to fp32, and how much the examples' gradients agree (|sum g_i| /
sum |g_i|): where they cancel, bf16's rounding is a large part of what is left. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import csv

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import lora
from experiments.cli import compose
from experiments.models import build, load_tokenizer
from experiments.paths import data_dir


def inputs(tokenizer, vocab: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    ids = torch.randint(0, vocab, (4, 32), generator=torch.Generator().manual_seed(0))
    with open(data_dir() / "e2e" / "trainset.csv", newline="") as f:
        rows = [r for _, r in zip(range(4), csv.DictReader(f), strict=False)]
    enc = tokenizer([r["mr"] + " || " + r["ref"] for r in rows], return_tensors="pt", padding=True)
    return {"random tokens": (ids, torch.ones_like(ids)), "E2E text": (enc["input_ids"], enc["attention_mask"])}


def same_factors(ours, peft, a_std: float):
    """Random A (std a_std) and B (std 0.02) in ours, copied into PEFT's matrices (the same order: q then v)."""
    g = torch.Generator().manual_seed(1)
    theirs = [p for n, p in peft.named_parameters() if "lora_" in n]
    mine = [(n, p) for n, p in ours.named_parameters() if "lora_" in n]
    with torch.no_grad():
        for (name, p), q in zip(mine, theirs, strict=True):
            p.copy_(torch.randn(p.shape, generator=g) * (a_std if "lora_A" in name else 0.02))
            q.copy_(p)


def gradient(model, ids, mask, bf16: bool) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward()
    grads = [p.grad.flatten().float() for n, p in model.named_parameters() if "lora_" in n]
    return loss.item(), torch.cat(grads)


def main():
    from peft import LoraConfig, get_peft_model

    base = build("smollm2_135m", head="causal_lm")
    tokenizer = load_tokenizer(OmegaConf.to_container(compose(["model=smollm2_135m"]).model, resolve=True))
    data = inputs(tokenizer, base.config.vocab_size)
    config = lora.LoRAConfig(r=4, alpha=8, dropout=0.0, targets=("q", "v"), train_head=False)
    ours = lora.apply(copy.deepcopy(base), config)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    for a_std in (0.25, 0.02):
        same_factors(ours, peft, a_std)
        for name, (ids, mask) in data.items():
            row = [f"A std {a_std:<5} {name:14s}"]
            for kind, model in (("ours", ours), ("peft", peft)):
                (l32, g32), (l16, g16) = gradient(model, ids, mask, False), gradient(model, ids, mask, True)
                cos, rel = F.cosine_similarity(g16, g32, dim=0).item(), ((g16 - g32).norm() / g32.norm()).item()
                row.append(f"{kind}: loss {l32:.4f} / {l16:.4f}, cosine {cos:.5f}, rel {rel:.4f}")
            print(" | ".join(row), flush=True)
    same_factors(ours, peft, 0.25)
    for name, (ids, mask) in data.items():
        each = [gradient(ours, ids[i : i + 1], mask[i : i + 1], False)[1] for i in range(len(ids))]
        agreement = torch.stack(each).sum(0).norm() / sum(g.norm() for g in each)
        print(f"{name:14s} agreement |sum g_i| / sum |g_i| = {agreement:.3f} over {len(each)} examples", flush=True)


if __name__ == "__main__":
    main()
