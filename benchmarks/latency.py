"""Inference latency of adapters against LoRA: the paper's Table 1 and Figure 5 on this machine.

    python -m benchmarks.latency                 # CPU grid that fits 2 cores
    python -m benchmarks.latency --grid paper    # the paper's three columns, incl. (32, 512)
    python -m benchmarks.latency --device cuda   # on a GPU

GPT-2 medium with random weights (latency does not depend on their values), one forward pass of the
transformer (no LM head), in eval mode without gradients. Configurations, timed round-robin in one
process: the base model (= fine-tuned = LoRA merged, which has exactly its shape), LoRA unmerged
(r=4 on q,v), AdapterL and AdapterH at the paper's two adapter budgets (|Θ| about 0.5M and 11M).
Reported: median latency and the overhead in percent against the base model, per (batch, length).
"""

from __future__ import annotations

import copy
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub in a benchmark

import torch

import baselines
import lora
from benchmarks.common import machine, parse, parser, round_robin, save_json
from experiments.models import from_arch, model_conf

GRIDS = {
    "cpu": [(1, 32), (1, 128), (4, 128), (8, 128)],  # (16, 256) takes minutes per pass on 2 cores
    "paper": [(32, 512), (16, 256), (1, 128)],
}
# Bottlenecks giving the paper's adapter budgets on GPT-2 medium: about 0.5M and about 11M parameters.
BUDGETS = {"0.5M": {"adapter_l": 8, "adapter_h": 4}, "11M": {"adapter_l": 224, "adapter_h": 112}}


def configs(base, budget: str) -> dict:
    models = {"base (FT / LoRA merged)": base}
    models["LoRA unmerged r=4"] = lora.apply(copy.deepcopy(base), lora.LoRAConfig(r=4, alpha=32))
    for name, r in BUDGETS[budget].items():
        label = f"{'AdapterL' if name == 'adapter_l' else 'AdapterH'} r={r}"
        models[label] = baselines.prepare(copy.deepcopy(base), {"name": name, "r": r})
    return {k: m.eval() for k, m in models.items()}


def main(argv=None):
    p = parser(__doc__, rounds=None)
    p.add_argument("--grid", choices=sorted(GRIDS), default=None, help="default: paper on a GPU, cpu on a CPU")
    args = parse(p, argv)
    gpu = args.device.startswith("cuda")
    grid = GRIDS[args.grid or ("paper" if gpu else "cpu")]
    rounds = args.rounds or (20 if gpu else 5)
    base = from_arch(model_conf("gpt2_medium")["arch"]).to(args.device).eval()  # random weights, no download
    rows = []
    for budget in BUDGETS:
        models = configs(base, budget)
        params = {k: lora.count(m).trainable - (lora.count(base).trainable if k.startswith("base") else 0)
                  for k, m in models.items()}  # fmt: skip
        for batch, length in grid:
            ids = torch.randint(0, 50257, (batch, length), device=args.device)

            steps = {k: forward(m, ids) for k, m in models.items()}
            times = round_robin(steps, warmup=1 if not gpu else 5, rounds=rounds, device=args.device)
            ref = times["base (FT / LoRA merged)"]
            for name, t in times.items():
                paired = statistics.median(a / b for a, b in zip(t, ref, strict=True))
                rows.append({"budget": budget, "batch": batch, "length": length, "config": name,
                             "adapter_params": params[name] if "Adapter" in name else None,
                             "median_ms": 1e3 * statistics.median(t), "overhead_pct": 100 * (paired - 1)})  # fmt: skip
            print(render([r for r in rows if (r["budget"], r["batch"], r["length"]) == (budget, batch, length)]))
    result = {"benchmark": "latency", "model": "gpt2_medium (random weights)", "device": args.device,
              "rounds": rounds, "machine": machine(), "rows": rows}  # fmt: skip
    path = save_json(f"latency-{args.device.split(':')[0]}", result)
    print(f"saved {path}")


def forward(model, ids):
    def step():
        with torch.inference_mode():
            model(input_ids=ids)

    return step


def render(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [f"batch {r0['batch']} x length {r0['length']}, adapter budget {r0['budget']}"]
    for r in rows:
        lines.append(f"  {r['config']:<26} {r['median_ms']:>10.1f} ms  {r['overhead_pct']:>+6.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
