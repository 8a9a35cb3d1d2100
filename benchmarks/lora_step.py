"""One LoRA training step of SmolLM2-135M: ours against PEFT's, in the same process.

    python -m benchmarks.lora_step                 # CPU, batch 8 x 64, r=4 on q,v, 10 timed rounds
    python -m benchmarks.lora_step --device cuda   # on a GPU

A step is forward (causal-LM loss) + backward + AdamW + zero_grad. Both models start from the same
weights and are timed round-robin, so the ratio survives a noisy machine. Memory is reported two
ways: the bytes autograd saves for backward (exact), and each config's peak memory measured alone
(peak RSS of a fresh process on CPU, max_memory_allocated on GPU). Target: ratio <= 1.00, no more memory.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys

import torch

import lora
from benchmarks.common import (
    SavedTensors,
    machine,
    parse,
    parser,
    peak_rss_mb,
    reset_peak_rss,
    round_robin,
    rss_mb,
    save_json,
    summary,
)
from experiments.models import build

CONFIGS = ("ours", "peft")
SETTING = ("model", "device", "batch", "seq", "r", "dropout", "warmup", "rounds")  # the options a result records


def prepare(name: str, base, args):
    if name == "ours":
        config = lora.LoRAConfig(r=args.r, alpha=2 * args.r, dropout=args.dropout, targets=("q", "v"))
        return lora.apply(base, config)
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=args.dropout, target_modules=["q_proj", "v_proj"])
    return get_peft_model(base, config)


def make_step(model, ids):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def alone(name: str, args) -> dict:
    """Peak memory of one config in this (fresh) process."""
    base = build(args.model, head="causal_lm").to(args.device)
    model = prepare(name, base, args).train()
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), device=args.device)
    step = make_step(model, ids)
    gc.collect()
    before = rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    elif not reset_peak_rss():
        return {"peak_mb": float("nan"), "kind": "peak RSS unavailable (no /proc/self/clear_refs)"}
    for _ in range(3):
        step()
    if args.device.startswith("cuda"):
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "kind": "cuda max_memory_allocated"}
    return {"peak_mb": peak_rss_mb(), "before_steps_mb": before, "kind": "peak RSS during 3 steps"}


def main(argv=None):
    p = parser(__doc__, model="smollm2_135m", batch=8, seq=64, r=4, warmup=2, rounds=10)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--alone", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: memory of one config
    args = parse(p, argv)
    torch.manual_seed(0)
    if args.alone:
        print(json.dumps(alone(args.alone, args)))
        return

    base = build(args.model, head="causal_lm").to(args.device)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), device=args.device)
    models = {name: prepare(name, copy.deepcopy(base), args).train() for name in CONFIGS}
    del base
    saved = {}
    for name, model in models.items():
        with SavedTensors() as probe:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        saved[name] = probe.nbytes
    times = round_robin({n: make_step(m, ids) for n, m in models.items()}, args.warmup, args.rounds, args.device)
    memory = {}
    for name in CONFIGS:  # each alone, in a fresh process, for an honest peak
        cmd = [sys.executable, "-m", "benchmarks.lora_step", "--alone", name, *(argv or sys.argv[1:])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ}).stdout
        memory[name] = json.loads(out.strip().splitlines()[-1])

    result = {
        "benchmark": "lora_step",
        "setting": {k: getattr(args, k) for k in SETTING},
        "machine": machine(),
        "trainable": {n: lora.count(m).trainable for n, m in models.items()},
        "step": {n: summary(t) for n, t in times.items()},
        "saved_for_backward_mb": {n: b / 2**20 for n, b in saved.items()},
        "peak_memory": memory,
    }
    result["ratio_ours_to_peft"] = result["step"]["ours"]["median_s"] / result["step"]["peft"]["median_s"]
    # Each round times both back to back: the median of per-round ratios cancels slow spells of the machine.
    result["paired_ratio_ours_to_peft"] = statistics.median(
        o / p for o, p in zip(times["ours"], times["peft"], strict=True)
    )
    result["memory_ratio_ours_to_peft"] = memory["ours"]["peak_mb"] / memory["peft"]["peak_mb"]
    result["saved_ratio_ours_to_peft"] = saved["ours"] / saved["peft"]
    path = save_json(f"lora_step-{args.device.split(':')[0]}", result)
    print(render(result))
    print(f"saved {path}")


def render(r: dict) -> str:
    s = r["setting"]
    lines = [
        f"{s.get('model', 'smollm2_135m')}, LoRA r={s['r']} on q,v, batch {s['batch']} x {s['seq']}, {s['device']}, "
        f"median of {s['rounds']} round-robin steps",
        f"{'config':<6} {'trainable':>10} {'median':>9} {'min':>9} {'max':>9} {'saved for bwd':>14} {'peak mem':>10}",
    ]
    for n in CONFIGS:
        t, m = r["step"][n], r["peak_memory"][n]
        lines.append(
            f"{n:<6} {r['trainable'][n]:>10,} {t['median_s'] * 1e3:>7.0f}ms {t['min_s'] * 1e3:>7.0f}ms "
            f"{t['max_s'] * 1e3:>7.0f}ms {r['saved_for_backward_mb'][n]:>11.1f} MB {m['peak_mb']:>7.0f} MB"
        )
    lines.append(
        f"ours / peft: step time {r['ratio_ours_to_peft']:.3f} (paired {r['paired_ratio_ours_to_peft']:.3f}), "
        f"peak memory {r['memory_ratio_ours_to_peft']:.3f}, "
        f"saved for backward {r['saved_ratio_ours_to_peft']:.3f}   (target: step <= 1.00, memory <= 1.00)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
