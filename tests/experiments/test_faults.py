"""Runs survive faults: SIGKILL at many moments, a NaN loss, a damaged checkpoint.

Each killed run is resumed and must end with bitwise the weights of a run never interrupted (CPU,
same threads, deterministic kernels), and at no moment may the run folder hold a visible file that
does not load whole. The default suite kills at one moment of each kind; `-m slow` at 23 moments.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from fault_run import Forked, forked
from omegaconf import OmegaConf
from safetensors import safe_open

from experiments.cli import compose
from experiments.runs import RunError, RunFolder, verify
from experiments.train import run
from lora.files import read_safetensors

TINY = ["model=tiny_bert", "task=rte", "method.dropout=0.1", "trainer.max_steps=8", "trainer.train_limit=48",
        "trainer.eval_limit=8", "trainer.batch_size=8", "trainer.eval_every=4", "trainer.save_every=2",
        "trainer.threads=2"]  # fmt: skip
# In this run: 8 optimizer steps; 20 file writes (config.yaml; 4 per checkpoint at steps 2, 4, 6, 8:
# trainable, optimizer, state, COMPLETE; then adapter, adapter.json, metrics.json), and 2 more (adapter-best and
# its JSON) at each evaluation that is the best so far, before that step's checkpoint; 3 old checkpoints removed.
EACH_KIND = [("step", 3), ("torn", 1), ("rename", 20), ("renamed", 9), ("rmtree", 1)]  # torn 1: the first file
ALL_MOMENTS = [
    *[("step", n) for n in (1, 2, 3, 5, 7, 8)],
    *[("torn", n) for n in (1, 2, 3, 4, 5, 10, 18, 19, 20)],  # 1: config.yaml, 2-5: checkpoint 2, 20: metrics
    *[("rename", n) for n in (6, 13, 20)],
    *[("renamed", n) for n in (5, 9, 20)],  # 20: metrics.json in place, checkpoints not yet dropped
    *[("rmtree", n) for n in (1, 3)],
]


def harness(event: str, n: int, folder: Path) -> subprocess.CompletedProcess:
    return forked([event, str(n), str(folder), *TINY], timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("faults") / "straight"
    done = harness("none", 0, folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return read_safetensors(folder / "adapter.safetensors")[0]


def whole_files(folder: Path) -> list[str]:
    """Every visible file loads whole (JSON, YAML, safetensors, torch); returns those that do not."""
    broken = []
    for f in folder.rglob("*"):
        if not f.is_file() or f.name.startswith(".") or f.name in ("log.txt", "COMPLETE"):
            continue
        try:
            if f.suffix == ".json":
                json.loads(f.read_text())
            elif f.suffix == ".yaml":
                assert isinstance(yaml.safe_load(f.read_text()), dict)
            elif f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as st:
                    [st.get_tensor(k) for k in st.keys()]
            elif f.suffix == ".pt":
                torch.load(f, weights_only=True)
        except Exception as err:
            broken.append(f"{f.relative_to(folder)}: {err}")
    for ckpt in (folder / "checkpoints").glob("step-*"):
        if (ckpt / "COMPLETE").exists() and verify(ckpt) is not None and not _being_removed(ckpt, folder):
            broken.append(f"{ckpt.name}: {verify(ckpt)}")
    return broken


def _being_removed(ckpt: Path, folder: Path) -> bool:
    """An older checkpoint caught while it was being deleted: loading skips it (its checksums fail)."""
    newest = RunFolder(folder).latest_checkpoint()
    return newest is not None and newest != ckpt


def kill_resume_compare(event: str, n: int, folder: Path, reference: dict):
    killed = harness(event, n, folder)
    assert killed.returncode == -9, f"{event} {n} was not reached: rc {killed.returncode}\n{killed.stderr[-1500:]}"
    assert whole_files(folder) == [], f"after {event} {n}"
    metrics = folder / "metrics.json"
    if not (metrics.exists() and json.loads(metrics.read_text())["status"] == "complete"):
        resumed = harness("none", 0, folder)
        assert resumed.returncode == 0, f"resume after {event} {n}: {resumed.stderr[-2000:]}"
    assert not list(folder.rglob(".*.tmp")), "a finished run leaves no temporary files"
    weights, _ = read_safetensors(folder / "adapter.safetensors")
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights), f"weights differ after {event} {n}"


@pytest.mark.parametrize(("event", "n"), EACH_KIND)
def test_a_run_killed_at_each_kind_of_moment_resumes_to_the_same_weights(tmp_path, reference, event, n):
    kill_resume_compare(event, n, tmp_path / "run", reference)


@pytest.mark.slow
@pytest.mark.parametrize(("event", "n"), ALL_MOMENTS)
def test_a_run_killed_at_23_moments_resumes_to_the_same_weights(tmp_path, reference, event, n):
    kill_resume_compare(event, n, tmp_path / "run", reference)


def test_there_are_at_least_20_moments():
    assert len(set(ALL_MOMENTS)) >= 20 and set(EACH_KIND) <= set(ALL_MOMENTS)


def config(folder: Path, *overrides: str) -> dict:
    return OmegaConf.to_container(compose([f"trainer.output_dir={folder}", *overrides]), resolve=True)


def test_a_nan_loss_stops_the_run_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    cfg = config(tmp_path, *TINY, "trainer.lr=1e30", "trainer.max_grad_norm=0", "trainer.save_every=1")
    with pytest.raises(RunError, match=r"the loss is (nan|inf) at step (\d+); the last good checkpoint is") as err:
        run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and f"at step {metrics['step']};" in str(err.value)
    kept = RunFolder(tmp_path).latest_checkpoint()
    assert kept is not None and int(kept.name.split("-")[1]) == metrics["step"] - 1 and verify(kept) is None
    assert "\n" not in str(err.value)


def test_a_checkpoint_that_fails_its_checksum_is_not_resumed_from(tmp_path):
    run(config(tmp_path, *TINY, "trainer.stop_after=4"))
    folder = RunFolder(tmp_path)
    ckpt = folder.latest_checkpoint()
    assert ckpt is not None and ckpt.name == "step-0000004"
    state = ckpt / "state.json"
    state.write_text(state.read_text().replace('"step": 4', '"step": 3'))  # whole, valid JSON, but changed
    assert "does not match its checksum" in verify(ckpt)
    assert folder.latest_checkpoint() is None  # the older one was removed when step 4 completed


def test_a_damaged_checkpoint_is_set_aside_and_said_on_the_terminal_and_in_the_log(tmp_path, capfd):
    """Before, the damaged checkpoint was skipped with a warning nobody saw, the run restarted from step 0 and
    deleted the checkpoint at its end. Now it is kept under damaged-checkpoints/ and the resume says so."""
    run(config(tmp_path, *TINY, "trainer.stop_after=4"))
    ckpt = RunFolder(tmp_path).latest_checkpoint()
    state = ckpt / "state.json"
    changed = state.read_text().replace('"step": 4', '"step": 3')
    state.write_text(changed)
    capfd.readouterr()
    metrics = run(config(tmp_path, *TINY))
    said = capfd.readouterr().err
    aside = tmp_path / "damaged-checkpoints" / "step-0000004"
    for text in (said, (tmp_path / "log.txt").read_text()):
        assert f"checkpoint {ckpt} is damaged (state.json does not match its checksum" in text, text[-2000:]
        assert f"kept as {aside}" in text and "training starts from step 0" in text
    assert (aside / "state.json").read_text() == changed and verify(aside) is not None
    assert metrics["status"] == "complete" and metrics["steps"] == 8 and not (tmp_path / "checkpoints").exists()


def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_exits_with_one_line(tmp_path):
    """SIGINT is handled like SIGTERM: before, Ctrl-C printed a 79-line traceback and left no checkpoint."""
    import signal
    import time

    long = [*TINY, "trainer.max_steps=60", "trainer.save_every=1000", "trainer.log_every=2", "trainer.eval_every=60"]
    proc = Forked(["none", "0", str(tmp_path / "run"), *long])
    deadline = time.time() + 240
    while "step 4 " not in _read(tmp_path / "run" / "log.txt") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err[-2000:]
    ckpt = RunFolder(tmp_path / "run").latest_checkpoint()
    assert ckpt is not None and verify(ckpt) is None
    log = _read(tmp_path / "run" / "log.txt")
    assert f"SIGINT at step {int(ckpt.name.split('-')[1])}: checkpoint written; run the same command again" in log


def test_stale_temporary_files_of_a_killed_run_are_swept_on_resume(tmp_path):
    run(config(tmp_path, *TINY, "trainer.stop_after=2"))
    stale = tmp_path / ".metrics.json.abc123.tmp"
    stale.write_text('{"status": "compl')
    run(config(tmp_path, *TINY))
    assert not stale.exists() and json.loads((tmp_path / "metrics.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("launcher", [pytest.param(False, marks=pytest.mark.slow), True])
def test_the_preemption_signal_writes_a_checkpoint_at_once_and_the_run_resumes(tmp_path, launcher):
    """SIGUSR2 (SLURM's warning through submitit) mid-training: the step finishes, a checkpoint is written
    at that step (not only at the periodic ones), the launcher's handler runs (it requeues), and the
    resumed run ends with bitwise the weights of one never signalled."""
    import signal
    import time

    long = [*TINY, "trainer.max_steps=60", "trainer.save_every=1000", "trainer.log_every=2", "trainer.eval_every=60"]
    straight, folder = tmp_path / "straight", tmp_path / "signalled"
    for path, event in ((straight, "none"), (folder, "launcher" if launcher else "none")):
        proc = Forked([event, "0", str(path), *long])
        if path == folder:
            deadline = time.time() + 240
            while "step 4 " not in _read(folder / "log.txt") and time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
            proc.send_signal(signal.SIGUSR2)
        _, err = proc.communicate(timeout=300)
        if path == straight:
            assert proc.returncode == 0, err[-2000:]
    assert proc.returncode == (3 if launcher else 128 + signal.SIGUSR2), err[-2000:]
    assert (tmp_path / "signalled.handed-over").exists() == launcher
    ckpt = RunFolder(folder).latest_checkpoint()
    assert ckpt is not None and verify(ckpt) is None and not (folder / "metrics.json").exists()
    stopped_at = int(ckpt.name.split("-")[1])
    assert 4 <= stopped_at < 60 and "SIGUSR2 at step" in _read(folder / "log.txt")
    resumed = harness_long(folder, long)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, _ = read_safetensors(straight / "adapter.safetensors")
    b, _ = read_safetensors(folder / "adapter.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def harness_long(folder: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    return forked(["none", "0", str(folder), *overrides], timeout=300)


def _read(file: Path) -> str:
    return file.read_text() if file.exists() else ""


def test_a_file_system_without_locks_warns_and_runs(tmp_path, monkeypatch):
    """NFS emulates flock with fcntl locks, which need a file open for writing; a folder cannot be."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    metrics = run(config(tmp_path, *TINY))
    assert metrics["status"] == "complete"
    assert "cannot be locked on this file system (No locks available)" in (tmp_path / "log.txt").read_text()


def test_an_old_checkpoint_loses_its_marker_before_its_files(tmp_path, monkeypatch):
    """A kill while an old checkpoint is deleted must not leave a folder that looks damaged (COMPLETE, files gone)."""
    import shutil

    run(config(tmp_path, *TINY, "trainer.stop_after=2"))
    old = RunFolder(tmp_path).latest_checkpoint()
    monkeypatch.setattr(shutil, "rmtree", lambda path, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        RunFolder(tmp_path).save_checkpoint(3, {"w": torch.zeros(1)}, {}, {"step": 3})
    assert old.exists() and not (old / "COMPLETE").exists()


def test_a_second_ctrl_c_does_not_wait_for_the_step():
    import os
    import signal

    from experiments.preemption import Preemption

    preemption = Preemption()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert preemption.name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        preemption.restore()
