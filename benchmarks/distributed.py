"""Two processes against one: how far each engine's trained weights are from the single-process run, and
its training time relative to it.

    python -m benchmarks.distributed                        # tiny GPT-2, LoRA and full FT, 2 CPU processes
    python -m benchmarks.distributed --model smollm2_135m --steps 20 --batch 8 --methods lora

Each engine trains the same config (the global batch split between the processes) in one torchrun launch
(`python -m experiments.plan`); the reference is the same plan in one process. Reported per engine and
method: the largest difference of any trained value, GPT-2's attention key bias apart (its gradient is
zero in exact arithmetic, so Adam's steps there follow rounding noise; see tests/experiments/test_distributed.py),
and the training loop's seconds (metrics.json's train_seconds, start-up excluded) over the single process's:
one process with 2 threads against 2 processes with 1 thread each, the same 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import add_out, machine, save_json, use_out
from experiments.paths import ROOT
from experiments.runs import RunFolder, read_metrics
from lora.files import read_safetensors

ENGINES = ("single", "ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload")


def overrides(args) -> list[str]:
    common = [f"model={args.model}", f"task={args.task}", f"trainer.max_steps={args.steps}",
              f"trainer.train_limit={args.steps * args.batch}", "trainer.eval_limit=16",
              f"trainer.batch_size={args.batch}", f"trainer.eval_every={args.steps}", "trainer.lr=1e-3",
              "trainer.threads=1"]  # fmt: skip
    if args.model.startswith("tiny_gpt2"):  # dropout's masks depend on how a batch is split: off
        common += ["+model.arch.resid_pdrop=0", "+model.arch.embd_pdrop=0", "+model.arch.attn_pdrop=0"]
    return common


def launch(engine: str, methods: list[str], common: list[str], root: Path) -> None:
    trainer = ["trainer=default", "trainer.threads=2"] if engine == "single" else [f"trainer={engine}"]
    plan = [[str(root / engine / m), [*common, f"method={m}", *trainer]] for m in methods]
    (root / f"{engine}.json").write_text(json.dumps(plan))
    runner = [] if engine == "single" else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [sys.executable, *runner, "-m", "experiments.plan", str(root / f"{engine}.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"error: {engine} failed:\n{done.stderr[-3000:]}")


def compare(ours: Path, reference: Path, width: int | None) -> dict:
    a, b = read_safetensors(RunFolder(ours).adapter)[0], read_safetensors(RunFolder(reference).adapter)[0]
    worst, key_bias = 0.0, 0.0
    for k in a:
        d = (a[k] - b[k]).abs()
        if width and k.endswith("attn.c_attn.bias"):
            q, key, v = d.split(width)
            key_bias, d = max(key_bias, key.max().item()), max(q.max(), v.max())
        worst = max(worst, float(d.max()))
    seconds = [read_metrics(f)["train_seconds"] for f in (ours, reference)]
    return {"max_abs_diff": worst, "key_bias_max_abs_diff": key_bias if width else None,
            "largest_value": max(t.abs().max().item() for t in b.values()),
            "train_seconds": seconds[0], "train_time_vs_single": seconds[0] / max(seconds[1], 1e-9)}  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny_gpt2")
    p.add_argument("--task", default="rte")
    p.add_argument("--methods", default="lora,full_ft")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--engines", default=",".join(ENGINES[1:]))
    add_out(p)
    args = p.parse_args()
    use_out(args)
    methods, engines = args.methods.split(","), args.engines.split(",")
    common = overrides(args)
    width = 32 if args.model == "tiny_gpt2" else (1024 if args.model.startswith("gpt2_medium") else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        launch("single", methods, common, root)
        for engine in engines:
            launch(engine, methods, common, root)
            for m in methods:
                rows.append({"engine": engine, "method": m, **compare(root / engine / m, root / "single" / m, width)})
    print(f"{'engine':<26}{'method':<10}{'max |diff|':>12}{'key bias':>11}{'largest':>9}{'time/single':>13}")
    for r in rows:
        kb = "-" if r["key_bias_max_abs_diff"] is None else f"{r['key_bias_max_abs_diff']:.1e}"
        print(f"{r['engine']:<26}{r['method']:<10}{r['max_abs_diff']:>12.1e}{kb:>11}{r['largest_value']:>9.3f}"
              f"{r['train_time_vs_single']:>13.2f}")  # fmt: skip
    kind = "gpu" if torch.cuda.is_available() else "cpu"
    path = save_json(
        f"distributed-{args.model}-{kind}",
        {"config": vars(args), "overrides": common, "rows": rows, "machine": machine()},
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
