"""The whole default job, ours against Hugging Face Trainer + PEFT, each in its own process, interleaved.

    python -m benchmarks.job                    # 2 rounds of: ours, HF (its defaults), HF (group_by_length)
    python -m benchmarks.job --no-bf16          # ours in fp32 (default: the model's bf16 verdict); HF's best follows
    python -m benchmarks.job --seeds 1,2        # and, for the accuracy, ours and HF at two more seeds
    python -m benchmarks.job --seeds 3,4 --add-to benchmarks/results/job-fp32.json   # more seeds to a result
    python -m benchmarks.job --seeds 5,6,7 --jobs 2 --add-to ...   # those seeds two processes at a time

Ours is `python run.py` (MiniLM-L6 + LoRA on SST-2, 300 steps of 32, evaluations at 100, 200 and 300 on all
872 dev sentences); HF's is benchmarks/hf_job.py, the same job as a Hugging Face user writes it. A round runs
each config once, in turn (A B C A B C ...), so a machine that drifts slows all alike; the ratios are HF's wall
time over ours, round by round. Wall time is the whole process, measured from outside; its phases come from
each job's own record: start-up (imports, data, model; and for ours the last words after training), training
and evaluation. Accuracies are compared evaluation by evaluation at the same seed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.ab import run_job
from benchmarks.common import add_out, machine, save_json, timed_command, use_out
from experiments.paths import ROOT

CONFIGS = ("ours", "hf", "hf_best")


def hf_command(folder: Path, args, seed: int, best: bool) -> list[str]:
    options = ["--group-by-length", *(["--bf16"] if args.bf16 else [])] if best else []
    return [sys.executable, "-m", "benchmarks.hf_job", "--output-dir", str(folder / "hf"), "--seed", str(seed),
            "--out", str(folder / "hf.json"), "--steps", str(args.steps), "--eval-every", str(args.eval_every),
            *options]  # fmt: skip


def timed(config: str, folder: Path, args, seed: int) -> dict:
    """One job in its own process: wall time, phases, and the dev accuracy of each evaluation."""
    if config == "ours":
        bf16 = [] if args.bf16 is None else [f"trainer.bf16={str(args.bf16).lower()}"]  # None: the model's verdict
        r = run_job([f"trainer.seed={seed}", *bf16, f"trainer.max_steps={args.steps}",
                     f"trainer.eval_every={args.eval_every}", *args.ours], folder)  # fmt: skip
        args.bf16 = yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["bf16"]  # HF's best follows
        evals = [{"step": e["step"], "dev/accuracy": e["dev/accuracy"]} for e in r["evals"]]
        return {**{k: r[k] for k in ("wall", "startup", "training", "evaluation")}, "evals": evals,
                "trainable": r["trainable"], "seed": seed}  # fmt: skip
    wall = timed_command(hf_command(folder, args, seed, config == "hf_best"), ROOT)
    h = json.loads((folder / "hf.json").read_text())
    phases = {"startup": wall - h["train_seconds"], "training": h["train_seconds"] - h["eval_seconds"],
              "evaluation": h["eval_seconds"]}  # fmt: skip
    return {"wall": wall, **phases, "evals": h["evals"], "trainable": h["trainable"], "seed": seed}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every config (at least 2)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (the default job's 300)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ours with trainer.bf16 on/off (default: the model's verdict); HF's best follows ours",
    )
    p.add_argument("--seeds", default="", help="more seeds, run once each by ours and HF, for the accuracies")
    p.add_argument("--add-to", type=Path, help="an earlier result JSON: keep its rounds and seeds, run only --seeds")
    p.add_argument("--jobs", type=int, default=1, help="--seeds' runs this many at a time (their times then not "
                   "comparable: only their accuracies are used); give each one thread: OMP_NUM_THREADS")  # fmt: skip
    p.add_argument("ours", nargs="*", help="more overrides for ours (key=value)")
    add_out(p)
    args = p.parse_args(argv)
    use_out(args)
    command = " ".join(["python -m benchmarks.job", *(sys.argv[1:] if argv is None else argv)])
    runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
    extra: dict[str, list[dict]] = {c: [] for c in ("ours", "hf")}
    if args.add_to:
        before = json.loads(args.add_to.read_text())
        runs, extra, args.bf16, args.rounds = before["runs"], before["more_seeds"], before["bf16"], 0
        command = f"{before['command']}; then {command}"
        held = {r["seed"] for r in runs["ours"] + extra["ours"]}
        if held & {int(s) for s in args.seeds.split(",") if s}:
            p.error(f"{args.add_to} already holds seeds {sorted(held)}: give --seeds others")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for config in CONFIGS:
                runs[config].append(timed(config, Path(tmp) / f"{config}-{i}", args, seed=0))
                print(f"round {i + 1} {config}: {runs[config][-1]['wall']:.1f} s", flush=True)
        more = [(config, int(seed)) for seed in args.seeds.split(",") if seed for config in extra]
        with ThreadPoolExecutor(args.jobs) as pool:  # threads that each wait on a job's process
            done = pool.map(lambda job: timed(job[0], Path(tmp) / f"{job[0]}-seed{job[1]}", args, job[1]), more)
            for (config, _), run in zip(more, done, strict=True):
                extra[config].append(run)
    payload = {"machine": machine(), "command": command,
               "bf16": args.bf16, "runs": runs, "more_seeds": extra, **summarise(runs, extra)}  # fmt: skip
    print(report(payload))
    print(f"saved {save_json('job-' + ('bf16' if args.bf16 else 'fp32'), payload)}")


def summarise(runs: dict[str, list[dict]], extra: dict[str, list[dict]]) -> dict:
    ratios = {c: [theirs["wall"] / ours["wall"] for theirs, ours in zip(runs[c], runs["ours"], strict=True)]
              for c in ("hf", "hf_best")}  # fmt: skip
    gaps = [abs(a["dev/accuracy"] - b["dev/accuracy"])
            for ours, theirs in zip(runs["ours"], runs["hf"], strict=True)
            for a, b in zip(ours["evals"], theirs["evals"], strict=True)]  # fmt: skip
    seeds = {c: runs[c][:1] + extra.get(c, []) for c in ("ours", "hf")}  # each seed once: round 1's, then the others
    by_seed = {c: [r["evals"][-1]["dev/accuracy"] for r in rs] for c, rs in seeds.items()}
    return {"speedup_vs_hf": ratios["hf"], "speedup_vs_hf_best": ratios["hf_best"],
            "median_speedup_vs_hf": statistics.median(ratios["hf"]),
            "median_speedup_vs_hf_best": statistics.median(ratios["hf_best"]),
            "largest_accuracy_gap_same_seed": max(gaps), "final_accuracy_by_seed": by_seed,
            "seed_means_by_step": seed_means(seeds) if len(seeds["ours"]) > 1 else None}  # fmt: skip


def seed_means(seeds: dict[str, list[dict]]) -> list[dict]:
    """At each evaluation: the mean dev accuracy over the seeds, ours and HF's, and their difference with its
    standard error (Welch's: each side's seed-to-seed variance over its count), so a gap at one seed can be told
    from seed noise.

    >>> run = lambda *a: {"evals": [{"step": 100, "dev/accuracy": x} for x in a]}
    >>> seed_means({"ours": [run(0.80), run(0.82)], "hf": [run(0.81), run(0.83)]})[0]["gap"]
    -0.01
    """
    rows = []
    for i, at in enumerate(seeds["ours"][0]["evals"]):
        accs = {c: [r["evals"][i]["dev/accuracy"] for r in rs] for c, rs in seeds.items()}
        se = math.sqrt(sum(statistics.variance(a) / len(a) for a in accs.values()))
        means = {c: statistics.mean(a) for c, a in accs.items()}
        rows.append({"step": at["step"], "seeds": len(accs["ours"]), "ours": round(means["ours"], 4),
                     "hf": round(means["hf"], 4), "gap": round(means["ours"] - means["hf"], 4),
                     "standard_error": round(se, 4)})  # fmt: skip
    return rows


def report(p: dict) -> str:
    lines = ["| config | wall s (median) | start-up | training | evaluation | dev accuracy at each evaluation |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for config, rs in p["runs"].items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("wall", "startup", "training", "evaluation")}
        accs = "; ".join(", ".join(f"{e['dev/accuracy']:.3f}" for e in r["evals"]) for r in rs)
        lines.append(f"| {config} | {med['wall']:.1f} | {med['startup']:.1f} | {med['training']:.1f} | "
                     f"{med['evaluation']:.1f} | {accs} |")  # fmt: skip
    best = "group_by_length" + (" and bf16" if p["bf16"] else "")
    lines.append(f"speed-up, HF's wall time over ours, round by round: vs HF defaults "
                 f"{', '.join(f'{x:.2f}' for x in p['speedup_vs_hf'])}; vs HF with {best} "
                 f"{', '.join(f'{x:.2f}' for x in p['speedup_vs_hf_best'])}")  # fmt: skip
    lines.append(f"largest dev-accuracy gap to HF at the same seed: {p['largest_accuracy_gap_same_seed']:.4f}; "
                 f"final accuracy by seed: {p['final_accuracy_by_seed']}")  # fmt: skip
    for row in p.get("seed_means_by_step") or []:
        lines.append(f"step {row['step']}, mean of {row['seeds']} seeds: ours {row['ours']:.4f}, HF {row['hf']:.4f}, "
                     f"gap {row['gap']:+.4f} (standard error {row['standard_error']:.4f})")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
