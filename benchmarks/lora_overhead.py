"""What a LoRA training step costs beyond the frozen model: SmolLM2-135M, ranks 1 to 16.

    python -m benchmarks.lora_overhead                  # CPU, batch 8 x 64, r = 1, 4, 8, 16 on q, v
    python -m benchmarks.lora_overhead --device cuda    # on a GPU

The floor: forward and backward of the frozen model with the gradient carried down to the input
embeddings (every block's activation gradients, no weight gradients), which any method that
adapts every block must pay. A LoRA step: forward, backward, AdamW and zero_grad of `lora.apply`
on W_q, W_v. All configs start from the same weights and are timed round-robin in one process.
Reported: each step over the floor (median of per-round ratios). Target: below 1.10 at r <= 16.
"""

from __future__ import annotations

import copy
import statistics

import torch

import lora
from benchmarks.common import machine, parse, parser, round_robin, save_json, summary
from benchmarks.lora_step import make_step
from experiments.models import build

TARGET = 1.10
SETTING = ("model", "device", "batch", "seq", "ranks", "dropout", "warmup", "rounds")  # the options a result records


def floor_step(model, ids):
    embed = model.get_input_embeddings()

    def step():
        x = embed(ids).detach().requires_grad_(True)
        model(inputs_embeds=x, labels=ids).loss.backward()

    return step


def main(argv=None):
    p = parser(__doc__, model="smollm2_135m", batch=8, seq=64, warmup=2, rounds=10)
    p.add_argument("--ranks", nargs="+", type=int, default=[1, 4, 8, 16])
    p.add_argument("--dropout", type=float, default=0.0)
    args = parse(p, argv)
    torch.manual_seed(0)
    base = build(args.model, head="causal_lm").to(args.device).train()
    for q in base.parameters():
        q.requires_grad_(False)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), device=args.device)
    steps = {"floor": floor_step(base, ids)}
    for r in args.ranks:
        config = lora.LoRAConfig(r=r, alpha=2 * r, dropout=args.dropout, targets=("q", "v"))
        steps[f"r={r}"] = make_step(lora.apply(copy.deepcopy(base), config).train(), ids)
    times = round_robin(steps, args.warmup, args.rounds, args.device)
    ratios = {n: statistics.median(a / b for a, b in zip(t, times["floor"], strict=True)) for n, t in times.items()}
    result = {
        "benchmark": "lora_overhead",
        "setting": {k: getattr(args, k) for k in SETTING},
        "machine": machine(),
        "step": {n: summary(t) for n, t in times.items()},
        "over_floor_paired": ratios,
        "target": f"LoRA step / floor < {TARGET} at r <= 16",
    }
    print(
        f"{args.model}, batch {args.batch} x {args.seq}, {args.device}, LoRA on q,v; "
        f"median of {args.rounds} round-robin steps"
    )
    print(f"{'config':<7} {'median':>9} {'min':>9} {'/ floor':>8}")
    for n, t in result["step"].items():
        print(f"{n:<7} {t['median_s'] * 1e3:>7.0f}ms {t['min_s'] * 1e3:>7.0f}ms {ratios[n]:>8.3f}")
    worst = max(v for n, v in ratios.items() if n != "floor")
    print(f"worst LoRA step / floor: {worst:.3f} (target < {TARGET})")
    print(f"saved {save_json('lora_overhead-' + args.device.split(':')[0], result)}")


if __name__ == "__main__":
    main()
