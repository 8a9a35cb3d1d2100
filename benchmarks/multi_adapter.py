"""A mixed batch over N adapters on one base model: `lora.multi` against PEFT and the base model alone.

    python -m benchmarks.multi_adapter                    # SmolLM2-135M and MiniLM-L6, CPU, N = 1, 8, 64
    python -m benchmarks.multi_adapter --device cuda      # on a GPU
    python -m benchmarks.multi_adapter --models minilm_l6 --rounds 3

One forward pass (no gradients) of a batch whose row i uses adapter i mod N (LoRA r=8 on q, v, every
factor non-zero). Timed round-robin in one process:
  base  the base model alone on the same batch (the floor: what a merged single adapter costs);
  ours  `lora.multi`: one base matmul per layer plus a gathered bmm pair per weight type;
  peft  PEFT's mixed-batch inference (``adapter_names=`` per row), which runs each adapter's rows as a
        sub-batch through its LoRA matrices, one adapter after another, in every layer.
Reported: median time per batch, rows per second, and each time over the base model's.
Target: ours within 1.3x of the base model at N = 64.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path

import torch

import lora
from benchmarks.common import machine, parse, parser, round_robin, save_json, summary
from experiments.models import build

HEADS = {"smollm2_135m": "causal_lm", "minilm_l6": "base"}  # the encoder without a head: heads are not LoRA's
TARGET = 1.3


def random_adapters(base, n: int, r: int, folder: Path, format: str = "peft") -> dict[str, Path]:
    """n adapters (PEFT's folder format by default: loadable by PEFT and by lora), all factors non-zero."""
    files = {}
    for i in range(n):
        model = lora.apply(copy.deepcopy(base), lora.LoRAConfig(r=r, alpha=2 * r, targets=("q", "v"), train_head=False))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, layer in lora.lora_layers(model):
                for p in (*layer.lora_A.values(), *layer.lora_B.values()):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        files[f"t{i}"] = lora.save(model, folder / f"t{i}", format=format)
    return files


def peft_model(base, files: dict[str, Path]):
    from peft import PeftModel

    names = list(files)
    model = PeftModel.from_pretrained(base, str(files[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(files[name]), adapter_name=name)
    return model.eval()


def bench_model(name: str, args) -> list[dict]:
    base = build(name, head=HEADS[name]).to(args.device).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, base.config.vocab_size, (args.batch, args.seq), generator=g).to(args.device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = random_adapters(base, max(args.adapters), args.r, Path(tmp))
        for n in args.adapters:
            row = {"model": name, "adapters": n, "batch": args.batch, "seq": args.seq}
            row.update(measure(base, {k: files[k] for k in list(files)[:n]}, inputs, args))
            rows.append(row)
            print(render_row(row), flush=True)
    return rows


def measure(base, files: dict, inputs: dict, args) -> dict:
    names = [list(files)[i % len(files)] for i in range(args.batch)]
    ours = copy.deepcopy(base)
    bank = lora.multi.load(ours, files)
    peft = peft_model(copy.deepcopy(base), files)

    def run_ours():
        with bank.rows(names):
            return ours(**inputs)[0]  # logits, or the encoder's last hidden state

    def run_peft():
        return peft(**inputs, adapter_names=names)[0]

    with torch.no_grad():
        # both paths must compute the same thing before their times mean anything
        row = {"max_abs_diff_vs_peft": (run_ours() - run_peft()).abs().max().item()}
        runs = {"base": lambda: base(**inputs), "ours": run_ours, "peft": run_peft}
        times = round_robin(runs, args.warmup, args.rounds, args.device)
    row.update({k: summary(v) for k, v in times.items()})
    for k in ("ours", "peft"):
        row[f"{k}_over_base"] = row[k]["median_s"] / row["base"]["median_s"]
        # per-round pairs cancel slow spells of a noisy machine
        row[f"{k}_over_base_paired"] = statistics.median(a / b for a, b in zip(times[k], times["base"], strict=True))
    return row


HEADER = f"{'model':<13} {'N':>3} {'base':>9} {'ours':>9} {'peft':>9} {'ours/base':>10} {'peft/base':>10} {'diff':>8}"


def render_row(r: dict) -> str:
    ms = {k: r[k]["median_s"] * 1e3 for k in ("base", "ours", "peft")}
    return (
        f"{r['model']:<13} {r['adapters']:>3} {ms['base']:>7.0f}ms {ms['ours']:>7.0f}ms {ms['peft']:>7.0f}ms "
        f"{r['ours_over_base_paired']:>10.3f} {r['peft_over_base_paired']:>10.3f} {r['max_abs_diff_vs_peft']:>8.1e}"
    )


def main(argv=None):
    p = parser(__doc__, batch=64, seq=32, r=8, warmup=1, rounds=5)
    p.add_argument("--models", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--adapters", nargs="+", type=int, default=[1, 8, 64])
    args = parse(p, argv)
    print(
        f"mixed batch of {args.batch} x {args.seq} tokens, LoRA r={args.r} on q,v, {args.device}; "
        "ratios are medians of per-round pairs"
    )
    print(HEADER)
    rows = [row for name in args.models for row in bench_model(name, args)]
    result = {
        "benchmark": "multi_adapter",
        "setting": {k: getattr(args, k) for k in ("device", "batch", "seq", "r", "warmup", "rounds")},
        "machine": machine(),
        "rows": rows,
        "target": f"ours/base <= {TARGET} at N = 64",
    }
    worst = max((r["ours_over_base_paired"] for r in rows if r["adapters"] == 64), default=float("nan"))
    print(f"worst ours/base at N = 64: {worst:.3f} (target <= {TARGET})")
    device = args.device.split(":")[0]
    print(f"saved {save_json(f'multi_adapter-{device}', result)}")


if __name__ == "__main__":
    main()
