"""Two processes on the CPU (gloo): each engine ends with the weights of the single-process run on the same data.

One torchrun launch per engine runs every method on RTE, and LoRA on E2E, from one plan (`python -m
experiments.plan`); the single-process references run here. The global batch is split between the
processes, so the two runs see the same examples per optimizer step (on E2E, different numbers of tokens
on each process: the loss weighs them) and differ only by float rounding (summing in another order): the
stated tolerance is 1e-5 on every trained value (measured: at most 5e-7 on values up to 0.4).
Dropout is switched off in the tiny model, since its random masks depend on how the batch is split.

One slice is compared apart: the key bias of GPT-2's fused `c_attn`. Softmax attention is invariant to it
(it adds q.b_k to every score of a query), so its gradient is zero in exact arithmetic and only rounding
noise in practice; Adam normalises that noise into steps of up to lr, whose signs depend on the summation
order (measured: up to 5e-5 apart, against at most 5e-7 for every other trained value). A finding about
fine-tuning GPT-2 with Adam, not about the engines.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.distributed import compare
from experiments.cli import compose, hydra_context
from experiments.engines import EngineError, ops_beside_the_venv, refuse_stale_op_locks, stale_op_locks
from experiments.paths import CONF_DIR, ROOT, data_dir
from experiments.train import run
from lora.files import read_safetensors

TOLERANCE = 1e-5
WIDTH, LR = 32, 1e-2  # tiny GPT-2's n_embd; the learning rate below
# tiny GPT-2, 3 blocks (AdapterD drops the lowest 2), no dropout; RTE as a classification task. 68 examples in
# global batches of 8 with 2 micro-batches per step: an epoch is 4 full steps and one of a single micro-batch,
# so the 6 steps cross an epoch's end. 16 dev examples in batches of 6: one process evaluates 2, the other 1.
GPT2 = ["model=tiny_gpt2", "model.arch.n_layer=3", "+model.arch.resid_pdrop=0", "+model.arch.embd_pdrop=0",
        "+model.arch.attn_pdrop=0"]  # fmt: skip
COMMON = ["trainer.max_steps=6", "trainer.train_limit=68", "trainer.eval_limit=16",
          "trainer.eval_batch_size=6", "trainer.batch_size=8", "trainer.grad_accum=2", "trainer.eval_every=3",
          "trainer.lr=1e-2", "trainer.threads=1", "trainer.warmup_steps=2", "trainer.weight_decay=0.01",
          "trainer.micro_batch_tokens=200", "trainer.eval_batch_tokens=400"]  # fmt: skip
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
RUNS = {m: [*GPT2, "task=rte", f"method={m}"] for m in METHODS}
# tiny BERT, no dropout: its micro-batches packed (experiments/packing.py), the processes' forwards matched
RUNS["bert_packed"] = ["model=tiny_bert", "+model.arch.hidden_dropout_prob=0", "task=rte", "method=lora",
                       "+model.arch.attention_probs_dropout_prob=0", "trainer.packing=true"]  # fmt: skip
# E2E: the processes' micro-batches hold different numbers of completion tokens, which the loss must weigh
E2E = [*GPT2, "task=e2e", "method=lora", "method.dropout=0", "model.arch.n_positions=256", "task.decode_limit=2",
       "task.decoding.num_beams=1", "task.decoding.max_new_tokens=4"]  # fmt: skip
if all((data_dir() / "e2e" / f).exists() for f in ("trainset.csv", "devset.csv", "testset_w_refs.csv")):
    RUNS["e2e_lora"] = E2E
# single-process references without length batching: every engine's length-batched run must end with their weights
UNBATCHED = {f"{name}_unbatched": [*RUNS[name], "trainer.length_batching=false", "trainer.packing=false"]
             for name in ("lora", "e2e_lora", "bert_packed") if name in RUNS}  # fmt: skip
ENGINES = ("ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload")
# Every run under every engine but ZeRO-3 with offload, which partitions as ZeRO-3 does (every method above) and
# differs in where the optimizer steps (DeepSpeed's CPU Adam, whatever is trainable): there, one run of each kind of
# trainable set (LoRA, dropped layers, every weight, biases alone, prefix parameters, E2E's token-weighted loss).
OFFLOAD_RUNS = ("lora", "adapter_d", "full_ft", "bitfit", "prefix_layer", "e2e_lora")
PLANS = {engine: [r for r in RUNS if engine != "deepspeed_zero3_offload" or r in OFFLOAD_RUNS] for engine in ENGINES}
RESUMED = ("ddp", "deepspeed_zero2", "deepspeed_zero3")  # also stopped after step 4 and resumed from step 3

pytestmark = pytest.mark.skipif(
    not (data_dir() / "glue" / "RTE").exists(), reason=f"no GLUE RTE under {data_dir()}: set LORA_SHARED_DIR"
)


def needs_deepspeed(engine: str):
    if engine.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]'; make install does)")


def launch(engine: str, root: Path) -> Path:
    """One torchrun launch with 2 processes training every run of the engine's plan into root/engine."""
    needs_deepspeed(engine)
    out = root / engine
    plan = [[str(out / name), [*COMMON, *RUNS[name], f"trainer={engine}"]] for name in PLANS[engine]]
    if engine in RESUMED:
        again = [*COMMON, *RUNS["lora"], f"trainer={engine}"]
        plan += [[str(out / "resumed"), [*again, "trainer.stop_after=4"]], [str(out / "resumed"), again]]
        plan += [[str(out / "stopped"), [*again, "trainer.stop_after=4"]]]  # its checkpoint stays
    (root / f"{engine}.json").write_text(json.dumps(plan))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "experiments.plan", str(root / f"{engine}.json")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The single-process run of every method (and E2E), the reference."""
    root = tmp_path_factory.mktemp("single")
    with hydra_context():
        for name, overrides in {**RUNS, **UNBATCHED}.items():
            cfg = compose([f"trainer.output_dir={root / name}", *COMMON, *overrides])
            run(OmegaConf.to_container(cfg, resolve=True))
    return root


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """engine -> its folder of runs, launched on first use; a failed launch is not repeated (its first test
    shows why; the others fail at once, instead of relaunching into the folders it left)."""
    root, done = tmp_path_factory.mktemp("distributed"), {}

    def get(engine: str) -> Path:
        if engine not in done:
            done[engine] = None
            done[engine] = launch(engine, root)
        if done[engine] is None:
            pytest.fail(f"the {engine} launch failed: its first test in this session shows why")
        return done[engine]

    return get


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(folder / "adapter.safetensors")[0]


CASES = [(engine, name) for engine, names in PLANS.items() for name in names]


@pytest.mark.parametrize(("engine", "name"), CASES, ids=[f"{e}-{n}" for e, n in CASES])
def test_two_processes_end_with_the_single_process_weights(engine, name, single, launched):
    needs_deepspeed(engine)
    ours, theirs = launched(engine) / name, single / name
    a, b = adapter(ours), adapter(theirs)
    assert a.keys() == b.keys()  # only the trained parameters, whole (ZeRO-3 gathers its slices)
    assert all(a[k].shape == b[k].shape for k in a)
    diffs = compare(ours, theirs, WIDTH)  # GPT-2's fused key bias apart
    assert diffs["max_abs_diff"] <= TOLERANCE, f"{engine} {name}: trained values differ by up to {diffs}"
    assert diffs["key_bias_max_abs_diff"] <= 6 * LR  # noise-driven Adam steps: at most lr each
    m, ref = (json.loads((f / "metrics.json").read_text()) for f in (ours, theirs))
    assert m["status"] == "complete" and m["steps"] == ref["steps"] == 6
    assert m["params"]["trainable"] == ref["params"]["trainable"] == sum(t.numel() for t in a.values())
    assert m["last_loss"] == pytest.approx(ref["last_loss"], rel=1e-5)  # the global batch's mean, logged by rank 0
    assert [e["step"] for e in m["evals"]] == [3, 6]
    for mine, one in zip(m["evals"], ref["evals"], strict=True):  # 3 dev batches spread over 2 processes
        assert mine == pytest.approx(one, rel=1e-4)
    assert "2 processes, 4 examples each per step" in (ours / "log.txt").read_text()


LENGTH_CASES = [
    (engine, name)
    for engine in ("single", *ENGINES)
    for name in UNBATCHED
    if engine == "single" or name.removesuffix("_unbatched") in PLANS[engine]
]


@pytest.mark.parametrize(("engine", "name"), LENGTH_CASES, ids=[f"{e}-{n}" for e, n in LENGTH_CASES])
def test_length_batched_steps_end_with_the_weights_of_unbatched_ones(engine, name, single, launched):
    """Each step's 16 examples sorted by length into micro-batches of at most 200 padded tokens (RTE's run 1 to 4
    to a forward, a process's count matched to the other's) against the same steps as 2 micro-batches of 8 in
    the epoch's order, on one process: the same weights to float rounding, under every engine. On E2E the loss
    weighs the micro-batches by completion tokens."""
    needs_deepspeed(engine)
    batched = (single if engine == "single" else launched(engine)) / name.removesuffix("_unbatched")
    diffs = compare(batched, single / name, WIDTH)
    assert diffs["max_abs_diff"] <= TOLERANCE, f"{engine} {name}: trained values differ by up to {diffs}"
    m, ref = (json.loads((f / "metrics.json").read_text()) for f in (batched, single / name))
    assert m["last_loss"] == pytest.approx(ref["last_loss"], rel=1e-5)
    for mine, one in zip(m["evals"], ref["evals"], strict=True):  # dev sorted by length vs in order: same scores
        assert mine == pytest.approx(one, rel=1e-4)


@pytest.mark.parametrize("engine", RESUMED)
def test_a_stopped_distributed_run_resumes_to_the_same_weights(engine, launched):
    needs_deepspeed(engine)
    folder = launched(engine)
    log = (folder / "resumed" / "log.txt").read_text()
    assert "resumed from" in log and "step-0000003" in log
    a, b = adapter(folder / "resumed"), adapter(folder / "lora")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"


@pytest.mark.parametrize("engine", RESUMED)
def test_checkpoints_hold_every_process_partition_under_the_checksum(engine, launched):
    """DeepSpeed writes its partitions into our checkpoint folder; the COMPLETE marker covers them, so a
    damaged partition makes the checkpoint invalid instead of being resumed from."""
    from experiments.runs import RunFolder, verify

    needs_deepspeed(engine)
    checkpoint = RunFolder(launched(engine) / "stopped").latest_checkpoint()
    assert checkpoint is not None and checkpoint.name == "step-0000003"
    sums = json.loads((checkpoint / "COMPLETE").read_text())["sha256"]
    partitions = sorted(k for k in sums if k.startswith("deepspeed/") and "optim_states" in k)
    assert len(partitions) == (2 if engine.startswith("deepspeed") else 0), sorted(sums)
    damaged = checkpoint / (partitions[-1] if partitions else "optimizer.pt")
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert "does not match its checksum" in verify(checkpoint)


def test_deepspeed_runs_as_one_process_without_torchrun(single, tmp_path):
    """`python run.py trainer=deepspeed_zero2` alone: a process group of one, the same weights as `single`."""
    needs_deepspeed("deepspeed_zero2")
    plan = [[str(tmp_path / "lora"), [*COMMON, *RUNS["lora"], "trainer=deepspeed_zero2"]]]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-m", "experiments.plan", str(tmp_path / "plan.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = adapter(tmp_path / "lora"), adapter(single / "lora")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= TOLERANCE
    if "TORCH_EXTENSIONS_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):  # its ops were kept in the venv
        assert (Path(sys.prefix) / "torch_extensions" / "deepspeed_shm_comm").is_dir()


def test_deepspeed_ops_are_kept_in_the_venv_unless_the_user_says_where(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    ops_beside_the_venv()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(Path(sys.prefix) / "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    ops_beside_the_venv()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path)


def test_a_checkpoint_of_one_process_is_not_resumed_by_two(tmp_path):
    """Each process restores its own RNG and optimizer partition: a checkpoint written by another number of
    processes is refused with one line, and the checkpoints are left as they were (config.yaml and log.txt
    record every attempt)."""
    out = tmp_path / "run"
    overrides = [*COMMON, *RUNS["lora"], "trainer=ddp"]
    with hydra_context():  # one process under trainer=ddp, stopped after step 4 (a checkpoint at step 3)
        run(OmegaConf.to_container(compose([f"trainer.output_dir={out}", *overrides, "trainer.stop_after=4"]),
                                   resolve=True))  # fmt: skip
    before = {p.relative_to(out): p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()}
    (tmp_path / "plan.json").write_text(json.dumps([[str(out), overrides]]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "experiments.plan", str(tmp_path / "plan.json")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode != 0
    assert "was written by 1 process(es), this run has 2; resume with as many" in done.stderr, done.stderr[-3000:]
    assert {p.relative_to(out): p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()} == before
    assert before and not (out / "adapter.safetensors").exists()


def test_a_build_lock_left_by_a_killed_build_is_named_instead_of_waited_on(monkeypatch, tmp_path):
    """torch waits with no end on an op's build lock; a build killed midway leaves one behind."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (tmp_path / "cpu_adam").mkdir()
    lock = tmp_path / "cpu_adam" / "lock"
    lock.write_text("")
    assert stale_op_locks() == [] and stale_op_locks(max_age=0) == [lock]  # a fresh lock: a build may be running
    refuse_stale_op_locks()
    os.utime(lock, (lock.stat().st_atime - 3600, lock.stat().st_mtime - 3600))  # an hour old
    with pytest.raises(EngineError, match=r"cpu_adam/lock is 60 min old: a DeepSpeed op build was killed") as err:
        refuse_stale_op_locks()
    assert "\n" not in str(err.value)


def test_make_install_removes_every_build_lock_then_builds_each_op(monkeypatch, tmp_path):
    """At install no other build runs, so any lock is a killed build's; the compile itself is DeepSpeed's (not run
    here: a stand-in builder records the calls)."""
    needs_deepspeed("deepspeed_zero2")
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    from experiments.engines import build_deepspeed_ops

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (tmp_path / "cpu_adam").mkdir()
    (tmp_path / "cpu_adam" / "lock").write_text("")
    built = []

    class Builder:
        def __init__(self, name):
            self.NAME = self.name = name

        def load(self, verbose=False):
            assert not (tmp_path / "cpu_adam" / "lock").exists()  # removed before any build
            built.append(self.NAME)

    # the real probe first (it runs on first access and is kept): later runs in this process see the real ops
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "cpuadambuilder", True)
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "sharememcommbuilder", False)
    monkeypatch.setattr(get_accelerator(), "create_op_builder", lambda name: Builder(name.lower()))
    lines = build_deepspeed_ops()
    assert lines == [f"removed {tmp_path / 'cpu_adam' / 'lock'}, left by a killed build",
                     f"DeepSpeed op cpuadambuilder: built in {tmp_path}",
                     "DeepSpeed op ShareMemCommBuilder: not available on this machine, not built"]  # fmt: skip
    assert built == ["cpuadambuilder"]
