"""Command-line plumbing: compose the config once up front so a mistake is one clear line."""

from __future__ import annotations

import functools
import json
import re
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


# The paper's recipe for each model and task it ran LoRA on, and the table of the paper it comes from: the one
# place that says so. `model=M task=T` with method lora (the default) composes in conf/experiment/M_T.yaml, whose
# header says where it departs from the paper; GPT-3's rows (Table 12) run on open stand-ins.
_GLUE = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb")
RECIPES: dict[tuple[str, str], str] = {
    **{(model, task): "Table 9" for model in ("roberta_base", "roberta_large") for task in _GLUE},
    **{("deberta_v2_xxlarge", task): "Table 10" for task in _GLUE},
    **{(model, task): "Table 11" for model in ("gpt2_medium", "gpt2_large") for task in ("e2e", "webnlg", "dart")},
    **{
        (model, task): "Table 12"
        for model in ("llama3_8b", "smollm2_135m")
        for task in ("wikisql", "samsum", "mnli_gen")
    },
}
_RECIPE_GROUPS = ("experiment", "sweep", "gpt3_row", "mnli_n")  # configs that set the trainer themselves


def recipe(overrides: list[str]) -> tuple[str | None, str]:
    """The preset `overrides` compose in (None: none) and the line that says so ("" when there is nothing to say).
    A preset is composed in for `model=M task=T` with LoRA when the paper ran (M, T) and nothing else names the
    trainer's settings (an experiment, a sweep, a GPT-3 row); `experiment=none` (conf/experiment/none.yaml) opts
    out."""
    named = dict(override.lstrip("+~").partition("=")[::2] for override in overrides)
    if "experiment" in named:
        return None, _other_pair(named)
    if any(group in named for group in _RECIPE_GROUPS):
        return None, ""
    model, method, task = (named.get(group, _default(group)) for group in ("model", "method", "task"))
    if any(c in value for value in (model, method, task) for c in ",()"):  # a sweep over groups: one job each
        models, tasks = (set(re.split(r"[\s,()]+", value)) for value in (model, task))
        swept = [(m, t) for (m, t) in RECIPES if m in models and t in tasks]
        why = "the paper's recipe is composed in for one model and task only: name experiment=MODEL_TASK per run"
        return None, f"recipe: {why} (model={model} method={method} task={task} sweeps)" if swept else ""
    if (model, task) not in RECIPES:
        return None, ""
    preset, table = f"{model}_{task}", RECIPES[model, task]
    if method != "lora":
        why = f"the paper gives no {method} recipe for {model} on {task} ({table} is LoRA's)"
        return None, f"recipe: {why}; this run takes the trainer's defaults (conf/trainer/default.yaml)"
    what = f"the paper's {table} recipe for LoRA on {model}, {task}"
    how = "its header says where it departs from the paper; experiment=none for the trainer's defaults"
    changed = [key for key in named if key in _preset_keys(preset)]
    return preset, f"recipe: experiment={preset}, {what} ({how})" + (
        f"; this command changes {', '.join(changed)}" if changed else ""
    )


def _other_pair(named: dict[str, str]) -> str:
    """A note when a paper preset runs on another model or task than the paper's pair, or with another method than
    LoRA (each silently takes the preset's settings: an adapter reads LoRA's r as its bottleneck)."""
    pairs = {f"{m}_{t}": (m, t) for m, t in RECIPES}
    if named["experiment"] not in pairs:
        return ""
    paper, method = pairs[named["experiment"]], named.get("method", "lora")
    here = (named.get("model", paper[0]), named.get("task", paper[1]))
    notes = []
    if here != paper:
        own = f"experiment={here[0]}_{here[1]} is" if here in RECIPES else "the paper ran no recipe"
        notes.append(f"not for model={here[0]} task={here[1]} ({own} for them)")
    if method != "lora":
        lora_keys = sorted(k.split(".", 1)[1] for k in _preset_keys(named["experiment"]) if k.startswith("method."))
        notes.append(f"not for method={method}, which receives its LoRA options {', '.join(lora_keys)}")
    if not notes:
        return ""
    return (f"recipe: experiment={named['experiment']} is the paper's {RECIPES[paper]} recipe for LoRA on {paper[0]}, "
            f"{paper[1]}; " + "; ".join(notes))  # fmt: skip


@functools.cache
def _preset_keys(preset: str) -> frozenset[str]:
    """The dotted keys a preset sets (`method.r`, `task.decoding.num_beams`, `trainer.lr`, ...)."""
    from omegaconf import OmegaConf

    def walk(node, prefix):
        if not isinstance(node, dict):
            return [prefix]
        return [key for k, v in node.items() for key in walk(v, f"{prefix}.{k}" if prefix else k)]

    tree = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / f"{preset}.yaml"))
    tree.pop("defaults", None)
    return frozenset(walk(tree, ""))


def with_recipe(overrides: list[str]) -> list[str]:
    """`overrides` with the paper's recipe composed in where `recipe` says so (the user's overrides still win). It
    goes just before the first override: Hydra's command line takes its overrides as one run (`--cfg job` after)."""
    preset, _ = recipe(overrides)
    if preset is None:
        return overrides
    at = next((i for i, arg in enumerate(overrides) if "=" in arg and not arg.startswith("-")), len(overrides))
    return [*overrides[:at], f"experiment={preset}", *overrides[at:]]


@functools.cache
def _default(group: str) -> str:
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(CONF_DIR / "config.yaml").defaults
    return next(entry[group] for entry in defaults if not isinstance(entry, str) and group in entry)


def compose(overrides: list[str], with_hydra: bool = False):
    """The composed config (unresolved) for these command-line overrides, as `run.py` would see it (with the
    paper's recipe for a (model, task) it ran: `with_recipe`); `with_hydra` keeps Hydra's own `hydra` node."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    register()
    overrides = with_recipe(overrides)
    if GlobalHydra.instance().is_initialized():  # inside `hydra_context()`: reuse it (many compositions)
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)
    with hydra_context():
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=with_hydra)


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
    try:
        cfg = resolved_as_one_job(argv)
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


def resolved_as_one_job(argv: list[str]) -> dict:
    """The config of `python run.py ARGV` (no `-m`), resolved as Hydra resolves it for the job: `${hydra:...}`
    (a sweep file's `job.override_dirname`, say) reads the Hydra config of this very command. A config that
    sweeps (`hydra.sweeper.params`, from a conf/sweep file) is refused unless the command sets every key it
    sweeps: without `-m` Hydra would run one job at the file's base values, not the sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    cfg = compose(argv, with_hydra=True)
    swept = list(cfg.hydra.sweeper.get("params") or {})
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(argv)}
    unset = [key for key in swept if key.lstrip("+~") not in given]
    if unset:
        raise ValueError(f"this config sweeps {', '.join(swept)}: run the sweep with -m (python run.py -m "
                         f"{' '.join(argv)}), or set {', '.join(unset)} to run one of its jobs")  # fmt: skip
    hydra, before = HydraConfig.instance(), HydraConfig.instance().cfg
    hydra.set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    finally:
        hydra.cfg = before  # Hydra's state as it was: a later run in this process sets its own


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
    arch = cfg["model"]["arch"]
    check_method(
        cfg["method"]["name"], arch["model_type"], cfg["method"], arch.get("num_hidden_layers", arch.get("n_layer"))
    )
    check_run(task, arch["model_type"], cfg["trainer"]["eval_limit"])
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
        lines = [json.loads(line) for line in jobs_file.read_text().splitlines() if line]
        jobs = sorted({j["folder"]: j for j in lines}.values(), key=lambda j: j["job"])  # a re-run's line wins
        skipped = sum(j["status"] == "skipped" for j in jobs)
        print(sweep_table(jobs) + f"\n{len(jobs)} jobs" + (f", {skipped} skipped as finished before" if skipped else "")
              + f"; this table: {jobs_file}")  # fmt: skip


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
