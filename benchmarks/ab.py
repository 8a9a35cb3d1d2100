"""One `run.py` job under two settings, A and B, each in its own process, interleaved (A B A B ...): the time of
each phase and every evaluation's metrics side by side, so a speed change is measured with what it does to the
results.

    python -m benchmarks.ab --name length_batching_smollm2_e2e \\
        --a trainer.length_batching=false --b trainer.length_batching=true \\
        experiment=cpu_smollm2_e2e_lora trainer.max_steps=60 trainer.eval_every=60 method.dropout=0 \\
        task.decode_limit=1 trainer.threads=1

The overrides after the options go to both. Wall time is the whole process, measured from outside; its phases
come from the run's metrics.json: start-up (imports, data, model, and the last words after training), training
(the optimizer steps alone), evaluation (during training) and the final scoring (decoding, for generation tasks).
The ratio is A's wall time over B's, round by round: above 1, B is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import add_out, machine, save_json, timed_command, use_out
from experiments.paths import ROOT

PHASES = ("wall", "startup", "training", "evaluation", "final")


def run_job(overrides: list[str], folder: Path) -> dict:
    """`python run.py OVERRIDES` in its own process, into `folder`: wall time, its phases, every evaluation."""
    wall = timed_command([sys.executable, "run.py", f"trainer.output_dir={folder}", *overrides], ROOT)
    m = json.loads((folder / "metrics.json").read_text())
    return {"wall": wall, "startup": wall - m["wall_seconds"] + m["final_seconds"],
            "training": m["train_seconds"] - m["eval_seconds"], "evaluation": m["eval_seconds"],
            "final": m["final_seconds"], "evals": m["evals"], "trainable": m["params"]["trainable"]}  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="the result's name: benchmarks/results/ab-NAME.json")
    p.add_argument("--a", action="append", required=True, metavar="K=V", help="setting A, the baseline (repeatable)")
    p.add_argument("--b", action="append", required=True, metavar="K=V", help="setting B (repeatable)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of A and B")
    p.add_argument("overrides", nargs="*", help="overrides for both (key=value)")
    add_out(p)
    args = p.parse_args(argv)
    use_out(args)
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for side in runs:
                runs[side].append(run_job([*args.overrides, *getattr(args, side)], Path(tmp) / f"{side}-{i}"))
                print(f"round {i + 1} {side}: {runs[side][-1]['wall']:.1f} s", flush=True)
    ratios = [a["wall"] / b["wall"] for a, b in zip(runs["a"], runs["b"], strict=True)]
    payload = {"machine": machine(), "command": " ".join(["python -m benchmarks.ab", *sys.argv[1:]]),
               "a": args.a, "b": args.b, "overrides": args.overrides, "runs": runs,
               "a_over_b": ratios, "median_a_over_b": statistics.median(ratios)}  # fmt: skip
    print(report(payload))
    print(f"saved {save_json('ab-' + args.name, payload)}")


def report(p: dict) -> str:
    """The phases' medians and the evaluations of every run, one row per setting; then the ratios."""
    lines = ["| setting | " + " | ".join(f"{k} s" for k in PHASES) + " | evaluations (step: metrics) |",
             "|---|" + "---:|" * len(PHASES) + "---|"]  # fmt: skip
    for side in ("a", "b"):
        rs = p["runs"][side]
        times = " | ".join(f"{statistics.median(r[k] for r in rs):.1f}" for k in PHASES)
        evals = "; ".join(", ".join(f"{e['step']}: " + " ".join(f"{k} {v:.6g}" for k, v in e.items() if k.startswith(
            "dev/")) for e in r["evals"]) for r in rs)  # fmt: skip
        lines.append(f"| {side}: {' '.join(p[side])} | {times} | {evals} |")
    lines.append(f"A's wall time over B's, round by round: {', '.join(f'{x:.3f}' for x in p['a_over_b'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
