"""Sweeps on a real SLURM cluster: one node from Debian's packages, started and stopped by these tests.

The cluster is `../shared/tools/slurm-single-node.sh` (see ../shared/notes/slurm-single-node-ci.md);
its own directory and ports, so it never touches another cluster, and `stop` kills only the daemons it
started (by their pid files). Skipped, with the reason, where the script or the packages are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.paths import ROOT, shared_dir
from lora.files import read_safetensors

SCRIPT = shared_dir() / "tools" / "slurm-single-node.sh"
CLUSTER_DIR = "/tmp/slurm-ci-lora-tests"
TINY = ["model=tiny_bert", "task=rte", "trainer.train_limit=32", "trainer.eval_limit=8", "trainer.batch_size=8",
        "trainer.threads=1"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    if not SCRIPT.exists():
        pytest.skip(f"no {SCRIPT}: set LORA_SHARED_DIR to the team's shared folder")
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("Debian's slurmctld/slurmd/munge are not installed (make slurm-packages, as root)")
    env = {**os.environ, "SLURM_CI_DIR": CLUSTER_DIR, "SLURM_CI_CTLD_PORT": "6917", "SLURM_CI_SLURMD_PORT": "6918"}
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        pytest.skip(f"the single-node SLURM cluster did not start: {started.stderr.strip().splitlines()[-1:]}")
    env["SLURM_CONF"] = f"{CLUSTER_DIR}/slurm.conf"
    env["PATH"] = f"{CLUSTER_DIR}/bin:{env['PATH']}"
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def sweep(tmp: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp}/sweep",
            f"trainer.output_dir={tmp}/runs/${{hydra:job.override_dirname}}",
            "hydra.job.config.override_dirname.exclude_keys=[trainer.output_dir]", "hydra.launcher.timeout_min=10",
            *TINY, *overrides]  # fmt: skip


def test_a_rank_sweep_runs_as_slurm_jobs_and_the_tables_collect_it(cluster, tmp_path):
    from analysis.tables import collect

    done = subprocess.run(sweep(tmp_path, "trainer.max_steps=3", "method.r=1,2,4"), env=cluster, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = collect(tmp_path / "runs")
    assert sorted(int(r["r"]) for r in rows) == [1, 2, 4] and all(r["status"] == "complete" for r in rows)
    job_ids = {json.loads(m.read_text())["slurm_job_id"] for m in (tmp_path / "runs").glob("*/metrics.json")}
    assert None not in job_ids and len(job_ids) == 3  # three SLURM jobs, one per run


@pytest.mark.slow  # about 3 min: SLURM holds a requeued job back before it runs again
def test_a_requeued_job_resumes_and_ends_with_the_weights_of_an_uninterrupted_run(cluster, tmp_path):
    """`scontrol requeue` mid-training: SLURM kills the job and runs it again; the run resumes."""
    from omegaconf import OmegaConf

    from experiments.cli import compose
    from experiments.train import run

    steps = ["trainer.max_steps=300", "trainer.save_every=5", "trainer.eval_every=150"]  # long enough to catch
    job = subprocess.Popen(sweep(tmp_path, *steps, "method.r=2"), env=cluster, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        folder = _wait_for_checkpoint(tmp_path / "runs", timeout=300)
        job_id = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster, capture_output=True, text=True).stdout
        subprocess.run(["scontrol", "requeue", job_id.split()[0]], env=cluster, check=True, timeout=60)
        _, err = job.communicate(timeout=900)
    finally:
        job.kill()
    assert job.returncode == 0, err[-3000:]
    log = (folder / "log.txt").read_text()
    assert "resumed from" in log, log[-2000:]
    straight = tmp_path / "straight"
    run(OmegaConf.to_container(compose([f"trainer.output_dir={straight}", *TINY, *steps, "method.r=2"]), resolve=True))
    a, _ = read_safetensors(folder / "adapter.safetensors")
    b, _ = read_safetensors(straight / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wait_for_checkpoint(runs: Path, timeout: float) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for marker in runs.glob("*/checkpoints/step-*/COMPLETE"):
            folder = marker.parents[2]
            if not (folder / "metrics.json").exists():
                return folder
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint appeared under {runs} within {timeout} s")


# The sbatch templates on the cluster: one node standing in for many, 2 CPU processes; the #SBATCH lines meant
# for GPU nodes are overridden on the command line, as a user adapts them.
TEMPLATE_RUN = ["model=tiny_llama", "task=rte", "trainer.max_steps=4", "trainer.train_limit=64",
                "trainer.eval_limit=16", "trainer.batch_size=8", "trainer.eval_every=2",
                "trainer.threads=1"]  # fmt: skip


def submit(cluster: dict, template: str, out: Path, *overrides: str, wait: bool = True, **env: str):
    """`sbatch [--wait] slurm/TEMPLATE` from the repository root, on one node with 2 processes."""
    from experiments.engines import _free_port

    exports = ",".join(["ALL", "NPROC_PER_NODE=2", f"RDZV_PORT={_free_port()}", f"PYTHON={sys.executable}",
                        *(f"{k}={v}" for k, v in env.items())])  # fmt: skip
    cmd = ["sbatch", "--parsable", *(["--wait"] if wait else []), "--nodes=1", "--gpus-per-node=0",
           "--cpus-per-task=2", "--mem=8G", "--time=00:15:00", f"--output={out}/slurm-%j.out",
           "--open-mode=append", f"--export={exports}",
           str(ROOT / "slurm" / template), *TEMPLATE_RUN, f"trainer.output_dir={out}/run", *overrides]  # fmt: skip
    return subprocess.run(cmd, env=cluster, cwd=ROOT, capture_output=True, text=True, timeout=900)


TEMPLATES = [("torchrun.sbatch", "ddp", "ddp"), ("deepspeed.sbatch", "deepspeed_zero3", "DeepSpeed ZeRO-3")]


@pytest.mark.parametrize(("template", "zero", "engine"), TEMPLATES)
def test_the_sbatch_templates_train_with_two_processes_like_one(cluster, tmp_path, template, zero, engine):
    from omegaconf import OmegaConf

    from experiments.cli import compose
    from experiments.train import run

    if zero.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    done = submit(cluster, template, tmp_path, ZERO=zero)
    outputs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert done.returncode == 0, done.stderr[-2000:] + outputs[-3000:]
    assert f"1 node(s) x 2 processes, trainer={zero}" in outputs
    assert f"{engine}: 2 processes, 4 examples each per step" in (tmp_path / "run" / "log.txt").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["slurm_job_id"] == done.stdout.strip().split(";")[0]
    single = tmp_path / "single"
    run(OmegaConf.to_container(compose([f"trainer.output_dir={single}", *TEMPLATE_RUN]), resolve=True))
    a, _ = read_safetensors(tmp_path / "run" / "adapter.safetensors")
    b, _ = read_safetensors(single / "adapter.safetensors")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5


@pytest.mark.slow  # about 3 min: SLURM holds a requeued job back before it runs again
def test_the_template_checkpoints_on_usr2_requeues_and_resumes(cluster, tmp_path):
    """SLURM's warning before a time limit (--signal=B:USR2) reaches launch.sh, which stops the training
    processes with SIGTERM (they checkpoint) and requeues the job; the requeued job resumes the run."""
    long = ["trainer.max_steps=3000", "trainer.save_every=50", "trainer.eval_every=1500"]  # tiny steps take ms
    done = submit(cluster, "torchrun.sbatch", tmp_path, *long, wait=False)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().split(";")[0]
    _wait_for_checkpoint(tmp_path, timeout=300)
    subprocess.run(["scancel", "--signal=USR2", "--batch", job], env=cluster, check=True, timeout=60)
    deadline = time.time() + 600
    while time.time() < deadline and not (tmp_path / "run" / "metrics.json").exists():
        time.sleep(2)
    outputs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert "requeueing job" in outputs, outputs[-3000:]
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "SIGTERM at step" in log and "resumed from" in log, log[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3000
