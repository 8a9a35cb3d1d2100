"""The training loop: config -> model + method -> task data -> training -> run folder.

The same loop runs on one process or many (`experiments.engines`: accelerate for one process and DDP,
DeepSpeed ZeRO-2/3): each process trains on its slice of the global batch, and the main one writes the run
folder. Resuming from a checkpoint restores the trained parameters, the optimizer, the schedule, every
process's RNG and the position in the data, so an interrupted and resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

import baselines
import lora
from lora.io import config_from_meta, load_tensors, read_safetensors

from . import engines
from .models import build, check_loadable, load_tokenizer
from .paths import ROOT
from .runs import RunError, RunFolder
from .tasks import build_task

log = logging.getLogger("lora.train")


def batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's slices of one epoch's global batches: a permutation fixed by (seed, epoch), so a
    resumed run sees the same, and the same for any number of processes (`batch_size` is global).

    >>> one = batches(10, 4, seed=0, epoch=0)
    >>> two = [a + b for a, b in zip(batches(10, 4, 0, 0, rank=0, world=2), batches(10, 4, 0, 0, rank=1, world=2))]
    >>> [len(b) for b in one], [sorted(b) for b in one] == [sorted(b) for b in two]
    ([4, 4, 2], True)

    A last global batch too small to give every process an example is left out, so that every process takes
    as many steps (a collective waiting for a process that has none would hang):

    >>> [len(batches(9, 4, 0, 0, rank, world=2)) for rank in (0, 1)], len(batches(9, 4, 0, 0))
    ([2, 2], 3)
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    full = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [chunk[rank::world] for chunk in full if len(chunk) >= world]


@torch.no_grad()
def evaluate(model, tokenizer, task, items: list, batch_size: int, device, engine=None) -> dict[str, float]:
    """The task's metrics on `items`. Under an engine of several processes each predicts every world-th
    batch and engine.gather brings the outputs together; all run as many forwards, since under ZeRO-3
    every forward gathers parameters from every process: one short of a batch predicts the set's first
    batch again, and drops the outputs.
    """
    rank, world, gather = (engine.rank, engine.world, engine.gather) if engine else (0, 1, lambda x: [x])
    starts = list(range(0, len(items), batch_size))
    mine = starts[rank::world]
    rounds = math.ceil(len(starts) / world)
    special = getattr(model, "special_tokens", None)
    model.eval()
    try:
        outputs = {s: task.predict(model, tokenizer, items[s : s + batch_size], device, special) for s in mine}
        for _ in range(rounds - len(mine)):  # an output nobody reads
            task.predict(model, tokenizer, items[:batch_size], device, special)
    finally:
        model.train()
    everyone = {s: out for part in gather(outputs) for s, out in part.items()}
    return task.metrics([o for s in starts for o in everyone[s]], items)


def run(cfg: dict) -> dict:
    """Train and evaluate one model x method x task; returns metrics.json's content (on the main process;
    the others return their status)."""
    t = cfg["trainer"]
    validate(t)
    torch.manual_seed(t["seed"])
    random.seed(t["seed"])
    if t["threads"]:
        torch.set_num_threads(t["threads"])
    check_loadable(cfg["model"])  # refuse before any loading
    baselines.check(cfg["method"]["name"], cfg["model"]["arch"]["model_type"])
    engine = engines.create(t)
    try:
        return _train(cfg, engine)
    finally:
        engine.close()


def _train(cfg: dict, engine: engines.Engine) -> dict:
    t = cfg["trainer"]
    _agree_on_output_dir(t, engine)
    folder = RunFolder(t["output_dir"])
    checkpoint = engine.on_main(lambda: folder.open(cfg, t["resume"]))
    _log_to(folder.path / "log.txt" if engine.is_main else None)
    if engine.world > 1:
        each = t["batch_size"] // engine.world
        log.info("%s: %d processes, %d examples each per step", engine.name, engine.world, each)

    task = build_task(cfg["task"])
    task.preflight()
    train_set = task.examples("train")[: t["train_limit"]] if t["max_steps"] != 0 else []
    eval_sets = {s: task.examples(s)[: t["eval_limit"]] for s in task.eval_splits}
    tokenizer = load_tokenizer(cfg["model"])
    model = _prepared_model(cfg, task, tokenizer)
    if t["init_adapter"]:
        _init_from_adapter(model, Path(t["init_adapter"]))
    special = getattr(model, "special_tokens", None)
    counts = lora.count(model)
    log.info("model %s, method %s, task %s\n%s", cfg["model"]["name"], cfg["method"]["name"], task.name, counts)

    per_epoch = math.ceil(math.ceil(len(train_set) / t["batch_size"]) / t["grad_accum"])
    total = t["max_steps"] if t["max_steps"] is not None else math.ceil(per_epoch * t["epochs"])
    warmup = t["warmup_steps"] or round(t["warmup_ratio"] * total)
    model = engine.prepare(model, _param_groups(model, t["weight_decay"]), t["lr"], warmup, total)
    device = engine.device

    state = {"step": 0, "epoch": 0, "batch": 0, "evals": [], "best": None, "loss": None, "train_seconds": 0.0}
    if checkpoint is not None:
        state = _restore(checkpoint, engine)
        log.info("resumed from %s at step %d", checkpoint, state["step"])
    wandb_run = _wandb(cfg, folder.path) if cfg.get("logger", {}).get("wandb") and engine.is_main else None

    eval_every = t["eval_every"] or per_epoch
    save_every = t["save_every"] or eval_every
    started, seen = time.time() - state["train_seconds"], 0
    model.train()
    bar = tqdm(total=total, initial=state["step"], desc=f"{cfg['method']['name']} {task.name}", unit="step",
               disable=None if engine.is_main else True)  # fmt: skip
    done = state["step"] >= total
    preemption = Preemption()  # SLURM's warning before a time limit or preemption: checkpoint, then requeue
    try:
        while not done:
            epoch_batches = batches(len(train_set), t["batch_size"], t["seed"], state["epoch"], engine.rank,
                                    engine.world)  # fmt: skip
            for first in range(state["batch"], len(epoch_batches), t["grad_accum"]):
                chunks = epoch_batches[first : first + t["grad_accum"]]
                micro = [task.batch(tokenizer, [train_set[j] for j in chunk], special) for chunk in chunks]
                loss = _accumulate(engine, model, task, micro, t["label_smoothing"])
                if not math.isfinite(loss):
                    _diverged(folder, cfg, state, loss, engine.is_main)
                engine.step()
                seen += sum(map(len, chunks)) * engine.world
                state["step"], state["batch"], state["loss"] = state["step"] + 1, first + len(chunks), loss
                bar.update(1)
                bar.set_postfix(loss=f"{state['loss']:.4f}", ex_per_s=f"{seen / (time.time() - started):.1f}")
                if state["step"] % t["log_every"] == 0:
                    lr = engine.lr()
                    log.info("step %d loss %.4f lr %.2e", state["step"], state["loss"], lr)
                    if wandb_run:
                        wandb_run.log({"train/loss": state["loss"], "lr": lr}, step=state["step"])
                done = state["step"] >= total
                if state["step"] % eval_every == 0 or done:
                    _evaluate_into(state, engine, tokenizer, task, eval_sets, t, wandb_run)
                preempted = engine.any(preemption.requested is not None)  # all processes checkpoint together
                if state["step"] % save_every == 0 or done or preempted:
                    state["train_seconds"] = time.time() - started
                    _checkpoint(folder, engine, state)
                if preempted and not done:
                    log.info("%s at step %d: checkpoint written; the launcher requeues", preemption.name, state["step"])
                    bar.close()
                    preemption.hand_over()  # submitit's handler requeues the job and exits; without one, we exit
                if t["stop_after"] and state["step"] >= t["stop_after"] and not done:
                    log.info("stopping at step %d (trainer.stop_after)", state["step"])
                    bar.close()
                    return {"status": "stopped", "step": state["step"]}
                if done:
                    break
            else:
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
    finally:
        preemption.restore()
    bar.close()
    if total == 0 and not state["evals"]:  # evaluation only: the untrained model's dev scores
        _evaluate_into(state, engine, tokenizer, task, eval_sets, t, wandb_run)
    trained = engine.trainable_state()  # every process: partitioned parameters are gathered
    if not engine.is_main:
        return {"status": "complete", "rank": engine.rank}
    model = engine.final_model(trained, lambda: _prepared_model(cfg, task, tokenizer))
    metrics = _finish(cfg, folder, model, task, state, counts, started, tokenizer, device)
    if wandb_run:
        wandb_run.summary.update({f"best/{k}": v for k, v in metrics["best"].items() if isinstance(v, float)})
        wandb_run.finish()
    return metrics


def _accumulate(engine, model, task, micro: list[dict], label_smoothing: float) -> float:
    """Gradients of one optimizer step over its micro-batches; returns the step's loss, or at once a
    non-finite value when a micro-batch's loss is not finite on any process (before its backward, on
    every process: the caller stops the run).

    The loss is the mean over every unit of the global step (examples, or completion tokens for NLG), so a
    micro-batch counts by its share of the units, not as 1/grad_accum of the step: otherwise how a batch is
    split (micro-batches, processes, a short last step of an epoch) would change the update. HF Trainer
    does the same with `num_items_in_batch`.
    """
    units = [task.units(batch) for batch in micro]
    step_units, step_loss = engine.total(float(sum(units))), 0.0
    for batch, n in zip(micro, units, strict=True):
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        with engine.autocast():
            outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
            loss = task.loss(outputs, batch, label_smoothing)
        value = loss.item()
        if not math.isfinite(checked := engine.total(value)):  # a NaN on one process stops every one
            return checked
        share = n / step_units  # a Python float: exactly 1.0 for one micro-batch on one process
        engine.backward(loss * (share * engine.world))  # the engines average gradients over processes
        step_loss += value * share
    return engine.total(step_loss)


def _prepared_model(cfg: dict, task, tokenizer):
    """The base model with the method applied: the same on every process, and when rebuilt (the seed)."""
    model = build(cfg["model"], head=task.head, num_labels=task.num_labels, seed=cfg["trainer"]["seed"])
    if model.config.pad_token_id is None:  # decoder classifiers find the last token through the pad id
        model.config.pad_token_id = tokenizer.pad_token_id
    task.max_length = min(task.max_length, max_positions(model.config))
    return baselines.prepare(model, cfg["method"])


def _agree_on_output_dir(t: dict, engine: engines.Engine):
    """Processes started a moment apart may resolve `${now:...}` to different folders: the main one's wins
    (Hydra already made the others' folder, which is removed if empty)."""
    ours, main = t["output_dir"], engine.broadcast(t["output_dir"])
    if ours != main:
        with contextlib.suppress(OSError):
            Path(ours).rmdir()
        t["output_dir"] = main


class Preemption:
    """Catches the signal a scheduler sends before it stops a job (SIGUSR2 from submitit's sbatch
    ``--signal``, SIGTERM), so the loop can finish its step and write a checkpoint first; then the
    handler that was there before (submitit's: requeue and exit) runs. Only in the main thread."""

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self):
        self.requested: tuple | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._catch)

    def _catch(self, signum, frame):
        self.requested = (signum, frame)

    @property
    def name(self) -> str:
        return signal.Signals(self.requested[0]).name if self.requested else ""

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def hand_over(self):
        signum, frame = self.requested
        self.restore()
        handler = self.previous.get(signum)
        if callable(handler):
            handler(signum, frame)  # submitit: checkpoint the submission, requeue, exit
        raise SystemExit(128 + signum)  # no launcher to hand over to: stop, as the signal asked


def validate(t: dict):
    """Range checks Hydra's types cannot express; one clear line each."""
    positive = ("lr", "batch_size", "eval_batch_size", "grad_accum", "log_every")
    for key in positive:
        if not t[key] > 0:
            raise RunError(f"trainer.{key} must be > 0, got {t[key]}")
    if t["max_steps"] is not None and t["max_steps"] < 0:
        raise RunError(f"trainer.max_steps must be >= 0 (0: evaluate the untrained model), got {t['max_steps']}")
    for key in ("eval_every", "save_every", "eval_limit", "train_limit", "stop_after"):
        if t[key] is not None and t[key] < 1:
            raise RunError(f"trainer.{key} must be >= 1 or null, got {t[key]}")
    if t["max_steps"] is None and not t["epochs"] > 0:
        raise RunError(f"trainer.epochs must be > 0 (or set trainer.max_steps), got {t['epochs']}")
    if not 0 <= t["warmup_ratio"] < 1 or t["warmup_steps"] < 0 or not 0 <= t["label_smoothing"] < 1:
        raise RunError("trainer.warmup_ratio and trainer.label_smoothing must be in [0, 1), warmup_steps >= 0")


def max_positions(config) -> int:
    """The longest input the model takes (RoBERTa reserves two positions for its padding offset)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9
    return n - 2 if config.model_type == "roberta" else n


def _param_groups(model, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (the usual transformers recipe)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (rest if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]  # DeepSpeed drops empty groups, and the schedule must match


def _evaluate_into(state, engine, tokenizer, task, eval_sets, t, wandb_run):
    scores = {
        split: evaluate(engine.module(), tokenizer, task, items, t["eval_batch_size"], engine.device, engine)
        for split, items in eval_sets.items()
    }
    main_split = task.eval_splits[0]
    record = {
        "step": state["step"],
        "epoch": state["epoch"],
        **{f"{s}/{k}": v for s, d in scores.items() for k, v in d.items()},
    }
    state["evals"].append(record)
    key = f"{main_split}/{task.metric}"
    better = (lambda a, b: not a <= b) if task.greater_is_better else (lambda a, b: not a >= b)
    if state["best"] is None or better(record[key], state["best"][key]):  # NaN never stays the best
        state["best"] = record
    log.info("eval step %d: %s", state["step"], ", ".join(f"{k} {v:.4f}" for k, v in record.items() if "/" in k))
    if wandb_run:
        wandb_run.log({f"eval/{k}": v for k, v in record.items() if "/" in k}, step=state["step"])


def _diverged(folder: RunFolder, cfg: dict, state: dict, loss: float, main: bool):
    """Stop at a NaN or infinite loss before it reaches the weights; the last checkpoint stays."""
    step = state["step"] + 1
    kept = folder.latest_checkpoint()
    where = f"the last good checkpoint is {kept}" if kept else "no checkpoint was written before it"
    if main:
        folder.write_metrics(
            {
                "status": "diverged",
                "step": step,
                "loss": str(loss),
                "model": cfg["model"]["name"],
                "method": cfg["method"]["name"],
                "evals": state["evals"],
                "checkpoint": str(kept) if kept else None,
            }
        )
    raise RunError(
        f"the loss is {loss} at step {step}; {where}. Lower trainer.lr (now {cfg['trainer']['lr']}) or set "
        "trainer.max_grad_norm, and start again in a new trainer.output_dir"
    )


def _checkpoint(folder: RunFolder, engine: engines.Engine, state: dict):
    """Every process takes part (partitioned states are written by their owners); the main one writes ours."""
    path = folder.checkpoint_path(state["step"])
    if engine.is_main:
        folder.clear_checkpoint(path)  # a half-written one of a killed run
    engine.barrier()
    trainable = engine.trainable_state()
    saved = {**engine.save_state(path), "rng": engine.gather(_rng_state())}
    if engine.is_main:
        folder.save_checkpoint(state["step"], trainable, saved, state)
    engine.barrier()


def _rng_state() -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _restore(checkpoint: Path, engine: engines.Engine) -> dict:
    tensors, saved, state = RunFolder.load_checkpoint(checkpoint)
    rngs = saved["rng"]  # one per process; a changed engine is refused earlier, with the config
    if len(rngs) != engine.world:
        raise RunError(f"{checkpoint} was written by {len(rngs)} process(es), this run has {engine.world}; "
                       "resume with as many, or start a new trainer.output_dir")  # fmt: skip
    engine.load_state(checkpoint, tensors, saved)
    rng = rngs[engine.rank]
    torch.set_rng_state(rng["torch"])
    random.setstate(_tuples(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list | tuple) else x


def _init_from_adapter(model, file: Path):
    """Copy the LoRA matrices of another run's adapter (the paper starts MRPC, RTE, STS-B from MNLI);
    the task head is new. The adapter's LoRA config must equal this run's."""
    ours = getattr(model, lora.model.CONFIG_ATTR, None)
    if ours is None:
        raise RunError("trainer.init_adapter needs a LoRA method; this run's method has no LoRA matrices")
    file = file if file.suffix else file / "adapter.safetensors"
    tensors, meta = read_safetensors(file)
    theirs = config_from_meta(meta, file) if "lora_config" in meta else None
    keys = ("r", "alpha", "targets", "layers", "rslora")
    if theirs is None or any(getattr(theirs, k) != getattr(ours, k) for k in keys):
        raise RunError(f"{file} was trained with LoRA {theirs}; this run uses {ours}: they must agree on {keys}")
    load_tensors(model, {k: v for k, v in tensors.items() if ".lora_" in k}, source=file, base_model="?", partial=True)


def _finish(cfg, folder: RunFolder, model, task, state, counts, started, tokenizer, device) -> dict:
    is_lora = getattr(model, lora.model.CONFIG_ATTR, None) is not None
    if is_lora:
        lora.save(model, folder.path / "adapter.safetensors")
    else:  # the method's config in the header, so `baselines.load` can rebuild the model from the file alone
        baselines.save(model, folder.path / "adapter.safetensors")
    train_seconds = round(time.time() - started, 1)
    if is_lora:
        lora.merge(model)  # what the task does last (NLG decoding) runs at the base model's speed
    model.eval()
    final_started = time.time()
    last_word = task.final(model, tokenizer, folder.path, device, getattr(model, "special_tokens", None))
    final = state["evals"][-1] if state["evals"] else {}
    metrics = {
        "status": "complete",
        "model": cfg["model"]["name"],
        "method": cfg["method"]["name"],
        "task": task.name,
        "metric": f"{task.eval_splits[0]}/{task.metric}",
        "final": final,
        "best": state["best"],
        "evals": state["evals"],
        **last_word,
        "steps": state["step"],
        "last_loss": state["loss"],
        "params": {"trainable": counts.trainable, "total": counts.total, "by_type": counts.by_type},
        "wall_seconds": round(time.time() - started, 1),
        "train_seconds": train_seconds,
        "final_seconds": round(time.time() - final_started, 1),
        "peak_memory_mb": _peak_memory_mb(),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside SLURM
    }
    folder.write_metrics(metrics)
    folder.drop_checkpoints()  # finished: the adapter holds the result, optimizer states are dead weight
    log.info("done: best %s = %.4f%s; run folder %s", metrics["metric"], state["best"][metrics["metric"]],
             "".join(f", {k} {v:.4f}" for k, v in last_word.get("test", {}).items()), folder.path)  # fmt: skip
    return metrics


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _versions() -> dict:
    import accelerate
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}  # fmt: skip


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _log_to(file: Path | None):
    """The log to `file` and the terminal; None (processes other than the main one): warnings only."""
    log.setLevel(logging.INFO if file else logging.WARNING)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler()]
    if file:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def _wandb(cfg: dict, folder: Path):
    import os

    import wandb

    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=cfg["logger"]["project"], config=cfg, dir=str(folder), mode=mode)
