"""Command-line plumbing: compose the config once up front so a mistake is one clear line."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

import baselines
from baselines import MethodError
from baselines import check as check_method
from lora import LoRAError

from .config import register, validate
from .engines import EngineError
from .metrics import JavaMissing, ScoreInputError
from .models import ModelError, build, check_loadable
from .paths import CONF_DIR
from .runs import RunError, check_output_dir
from .tasks import TaskError, build_task, check_run

# A user's mistake, or the machine's (a full disk, a folder without write permission: OSError names the path
# and the cause): one line each, never a traceback.
USER_ERRORS = (LoRAError, MethodError, ModelError, RunError, TaskError, JavaMissing, ScoreInputError, EngineError,
               OSError)  # fmt: skip


def compose(overrides: list[str]):
    """The composed config (unresolved) for these command-line overrides, as `run.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    register()
    if GlobalHydra.instance().is_initialized():  # inside `hydra_context()`: reuse it (many compositions)
        return hydra_compose(config_name="config", overrides=overrides)
    with hydra_context():
        return hydra_compose(config_name="config", overrides=overrides)


def hydra_context():
    """Hydra initialised on conf/; compose many configs inside one `with hydra_context():`."""
    from hydra import initialize_config_dir

    return initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")


def check_config(argv: list[str], training: bool = True):
    """Exit with one line if the overrides do not compose or (`training`) hold a value training would refuse;
    multirun sweeps are left to Hydra and each job's own checks."""
    register()
    check_launcher(argv)
    if any(a in ("-m", "--multirun", "--help", "-h", "--cfg", "-c", "--info") or a.startswith("--") for a in argv):
        return
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(compose(argv), resolve=True, throw_on_missing=True)
    except Exception as err:  # Hydra and OmegaConf raise many types; all are the user's input here
        sys.exit(f"error: {one_line(err)}")
    unknown = sorted(set(cfg) - top_level_keys())
    if unknown:  # `+foo=bar` composes, and nothing would ever read it
        sys.exit(f"error: unknown config key {', '.join(unknown)}; the top level has only "
                 f"{', '.join(sorted(top_level_keys()))} (e.g. trainer.{unknown[0]}=...)")  # fmt: skip
    if not training:
        return
    try:
        check_values(cfg)
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")


def check_launcher(argv: list[str]):
    """`hydra/launcher=slurm` submits with `sbatch`: ask the SLURM controller first (`scontrol ping`), so a machine
    without one gets one line instead of submitit's 45-line traceback from `sbatch: fatal: ...`."""
    if "hydra/launcher=slurm" not in (a.lstrip("+~") for a in argv):
        return
    how = "run on a login node of your cluster, or point SLURM_CONF at its slurm.conf"
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        sys.exit(f"error: hydra/launcher=slurm needs SLURM's sbatch and scontrol, which are not on PATH: {how}")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
        answer = " ".join((ping.stdout + ping.stderr).split())
    except subprocess.TimeoutExpired:
        ping, answer = None, "scontrol ping gave no answer in 30 s"
    if ping is None or ping.returncode != 0 or " is UP" not in answer:
        sys.exit(f"error: no SLURM controller is reachable ({answer or 'scontrol ping failed'}): {how}")


def check_values(cfg: dict):
    """All that can be checked before anything loads or any folder is made (Hydra makes the run folder
    before the job starts): the trainer's ranges, the task's options and decoding settings, whether the
    method applies to the model, whether the model has weights."""
    validate(cfg["trainer"])
    check_output_dir(cfg["trainer"]["output_dir"])
    task = build_task(cfg["task"])
    model_type = cfg["model"]["arch"]["model_type"]
    check_method(cfg["method"]["name"], model_type)
    check_run(task, model_type, cfg["trainer"]["eval_limit"])
    check_loadable(cfg["model"])
    # Every option of the method against the real architecture (a rank above a weight's size, a block that is not
    # there, LoRA's alpha or layers): the method applied to the model built on the meta device, which allocates
    # nothing and loads no weights (0.3 s for Llama-3 8B).
    baselines.prepare(
        build(cfg["model"], head=task.head, num_labels=task.num_labels or 2, device="meta"), cfg["method"]
    )


@functools.cache
def top_level_keys() -> frozenset[str]:
    """The config's top-level keys: those of the default composition (the groups' files of other settings, like
    `experiment=...`, are global: they add none)."""
    return frozenset(compose([]))


def one_line(err: Exception) -> str:
    """Hydra's messages span lines and hide the reason in their cause; fold both into one line."""
    parts = [str(err)]
    if err.__cause__ is not None and str(err.__cause__) not in parts[0]:
        parts.append(str(err.__cause__))
    kept = []
    for line in (line.strip() for part in parts for line in part.splitlines()):
        if line.startswith(("Config search path", "provider=")):
            break  # Hydra's search path: noise for a user
        if line and not line.startswith(("full_key", "object_type", "reference_type")):
            kept.append(line)
    return " ".join(kept)


class SweepSummary(Callback):
    """A Hydra callback (conf/config.yaml): each job of a multirun appends its outcome to `jobs.jsonl` in the
    sweep folder (where it runs: here, or on a SLURM node), and the end of the multirun prints them as one
    table. Single runs are left alone."""

    def on_job_end(self, config, job_return, **kwargs):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:
            return
        result = job_return._return_value if isinstance(job_return._return_value, dict) else {}
        best = result.get("best") or {}
        line = {"job": hydra.job.num, "overrides": " ".join(hydra.overrides.task),
                "status": result.get("status", str(job_return.status.name).lower()),
                "metric": result.get("metric"), "best": best.get(result.get("metric")), "step": best.get("step"),
                "folder": config.trainer.output_dir}  # fmt: skip
        sweep = Path(hydra.sweep.dir)
        sweep.mkdir(parents=True, exist_ok=True)
        with open(sweep / "jobs.jsonl", "a") as f:  # one short append per job: whole lines, any launcher
            f.write(json.dumps(line) + "\n")

    def on_multirun_end(self, config, **kwargs):
        jobs_file = Path(config.hydra.sweep.dir) / "jobs.jsonl"
        if not jobs_file.exists():
            return
        jobs = sorted((json.loads(line) for line in jobs_file.read_text().splitlines() if line), key=lambda j: j["job"])
        print(sweep_table(jobs) + f"\n{len(jobs)} jobs; this table: {jobs_file}")


def sweep_table(jobs: list[dict]) -> str:
    """The jobs of a sweep as aligned columns, each with the overrides that tell it from the others.

    >>> job = {"status": "complete", "metric": "dev/accuracy", "step": 6}
    >>> print(sweep_table([{**job, "job": 0, "overrides": "method.r=1 task=rte", "best": 0.8125, "folder": "a"},
    ...                    {**job, "job": 1, "overrides": "method.r=2 task=rte", "best": 0.75, "folder": "b"}]))
    job  swept       status    best dev/accuracy  step  folder
    0    method.r=1  complete  0.8125             6     a
    1    method.r=2  complete  0.7500             6     b
    """
    shared = set.intersection(*(set(j["overrides"].split()) for j in jobs)) if len(jobs) > 1 else set()
    swept = {j["job"]: " ".join(o for o in j["overrides"].split() if o not in shared) for j in jobs}
    metrics = sorted({j["metric"] for j in jobs if j.get("metric")})
    best = f"best {metrics[0]}" if len(metrics) == 1 else "best (metric)"
    head = ["job", "overrides" if len(jobs) == 1 else "swept", "status", best, "step", "folder"]
    rows = [[str(j["job"]), swept[j["job"]], j["status"], _best_cell(j, len(metrics) > 1),
             "" if j.get("step") is None else str(j["step"]), j["folder"]] for j in jobs]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows])


def _best_cell(job: dict, name_metric: bool) -> str:
    if job.get("best") is None:
        return "-"
    return f"{job['best']:.4f}" + (f" ({job['metric']})" if name_metric else "")
