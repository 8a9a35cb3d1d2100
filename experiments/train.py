"""The training loop: config -> model + method -> task data -> training -> run folder.

The same loop runs on one process or many (`experiments.engines`: accelerate for one process and DDP,
DeepSpeed ZeRO-2/3): each process trains on its slice of the global batch, and the main one writes the run
folder (`experiments.runs`). Checkpoints (`experiments.checkpoints`) restore the trained parameters, the
optimizer, the schedule, every process's RNG and the position in the data, so an interrupted and resumed run
ends with the same weights as an uninterrupted one; a scheduler's warning (`experiments.preemption`) is
answered with a checkpoint first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import baselines
import lora
from lora.files import read_safetensors
from lora.model import max_positions
from lora.state import config_from_meta, load_tensors

from . import batching, checkpoints, engines, optimizers, packing
from .config import resolve_bf16, validate
from .models import adapter_model, check_loadable, load_tokenizer, prepared_model
from .preemption import Preemption
from .runs import RunError, RunFolder, ScalarLog, code_version, data_fingerprint, environment
from .tasks import Task, build_task, fitted, recording_reads

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


def evaluate(model, tokenizer, task, items: list, groups: list[list[int]], device, engine=None) -> dict[str, float]:
    """The task's metrics on `items`, predicted in `groups` (positions into `items`, one forward each:
    `eval_groups`) and scored in the items' order. Under an engine of several processes each predicts every
    world-th group and engine.gather brings the outputs together; all run as many forwards, since under
    ZeRO-3 every forward gathers parameters from every process: one short of a group predicts the first
    group again, and drops the outputs.
    """
    rank, world, gather = (engine.rank, engine.world, engine.gather) if engine else (0, 1, lambda x: [x])
    mine = list(range(len(groups)))[rank::world]
    rounds = math.ceil(len(groups) / world)
    special = getattr(model, "special_tokens", None)
    model.eval()
    try:
        with torch.inference_mode():
            outputs = {g: task.predict(model, tokenizer, [items[i] for i in groups[g]], device, special) for g in mine}
            for _ in range(rounds - len(mine)):  # an output nobody reads
                task.predict(model, tokenizer, [items[i] for i in groups[0]], device, special)
    finally:
        model.train()
    everyone = {g: out for part in gather(outputs) for g, out in part.items()}
    return task.metrics(batching.restore_order(groups, [everyone[g] for g in range(len(groups))]), items)


def eval_groups(t: dict, items: list, length: Callable[[object], int], max_length: int) -> list[list[int]]:
    """How evaluation batches `items`: sorted by length (trainer.length_batching), at most trainer.eval_batch_tokens
    padded tokens a forward (null: eval_batch_size sequences of `max_length`; packed, `packing.forwards` of
    `packing.EVAL_TOKENS`), else in order, eval_batch_size at a time."""
    if t["length_batching"]:
        lengths = [length(item) for item in items]
        if t["packing"]:
            return packing.forwards(lengths, t["eval_batch_tokens"] or packing.EVAL_TOKENS)
        budget = t["eval_batch_tokens"] or t["eval_batch_size"] * max_length
        return batching.by_length(lengths, budget, t["forward_cost_tokens"])
    size = t["eval_batch_size"]
    return [list(range(s, min(s + size, len(items)))) for s in range(0, len(items), size)]


def run(cfg: dict, skip_finished: bool = False) -> dict:
    """Train and evaluate one model x method x task; returns metrics.json's content (on the main process;
    the others return their status). `skip_finished` (a sweep's jobs): a folder that holds this config's finished
    run returns its metrics with status "skipped" instead of refusing the folder."""
    t = cfg["trainer"]
    validate(t)
    t["bf16"] = resolve_bf16(t, cfg["model"], engines.bf16_is_native())  # as the run folder's config.yaml records it
    head = build_task(cfg["task"]).head
    t["packing"] = packing.resolve(t["packing"], cfg["model"]["arch"]["model_type"], cfg["method"]["name"], head)
    torch.manual_seed(t["seed"])
    random.seed(t["seed"])
    if t["threads"]:
        torch.set_num_threads(t["threads"])
    check_loadable(cfg["model"])  # refuse before any loading
    baselines.check(cfg["method"]["name"], cfg["model"]["arch"]["model_type"])
    engine = engines.create(t)
    try:
        return _train(cfg, engine, skip_finished)
    finally:
        engine.close()


@dataclass
class _Run:
    """What the loop works with, set up once by `_start`."""

    cfg: dict
    engine: engines.Engine
    folder: RunFolder
    task: Task
    tokenizer: object
    model: torch.nn.Module
    train_set: list
    eval_sets: dict[str, list]
    eval_groups: dict[str, list[list[int]]]  # each split's forwards: `eval_groups`
    length: Callable[[object], int]  # an example's tokens, as the task batches it
    counts: lora.ParamCount
    total: int  # optimizer steps
    per_epoch: int
    special: dict | None  # the prefix methods' token ids (read before an engine wraps the model)
    rebuild: Callable[[], torch.nn.Module]  # the same model again (ZeRO-3's last part needs a whole copy)
    state: dict = field(default_factory=dict)
    wandb_run: object = None
    scalars: ScalarLog | None = None  # the main process's per-step scalars (CSV, TensorBoard, wandb)
    eval_examples: dict = field(default_factory=dict)  # split -> {"used": n, "of": the split's size}
    train_lengths: dict[int, int] = field(default_factory=dict)  # tokens of each training example met so far


def _train(cfg: dict, engine: engines.Engine, skip_finished: bool) -> dict:
    _agree_on_output_dir(cfg["trainer"], engine)
    folder = RunFolder(cfg["trainer"]["output_dir"])
    if skip_finished and (done := folder.finished(cfg)) is not None:
        if engine.is_main:
            print(f"skipped: {folder.path} holds this job's finished run", file=sys.stderr)
        return {**done, "status": "skipped"}
    try:
        return _train_into(folder, cfg, engine)
    finally:
        folder.close()  # the folder's lock


def _train_into(folder: RunFolder, cfg: dict, engine: engines.Engine) -> dict:
    r = _start(cfg, engine, folder)
    try:
        return _train_started(r)
    finally:
        if r.scalars is not None:
            r.scalars.close()


def _train_started(r: _Run) -> dict:
    engine = r.engine
    started = time.time() - r.state["train_seconds"]
    stopped = _loop(r, started)
    if stopped:
        return stopped
    if r.total == 0 and not r.state["evals"]:  # evaluation only: the untrained model's dev scores
        _evaluate_into(r)
    trained = engine.trainable_state()  # every process: partitioned parameters are gathered
    if not engine.is_main:
        return {"status": "complete", "rank": engine.rank}
    model = engine.final_model(trained, r.rebuild)
    metrics = _finish(r, model, started)
    if r.wandb_run:
        r.wandb_run.summary.update({f"best/{k}": v for k, v in metrics["best"].items() if isinstance(v, float)})
        r.wandb_run.finish()
    return metrics


def _cpu_capability() -> str:
    return "a GPU" if torch.cuda.is_available() else f"a {torch.backends.cpu.get_cpu_capability()} CPU"


def _start(cfg: dict, engine: engines.Engine, folder: RunFolder) -> _Run:
    """Claim the run folder, read the task's data, build the model with its method, and resume if asked."""
    t = cfg["trainer"]
    checkpoint = engine.on_main(lambda: folder.open(cfg, t["resume"]))
    _log_to(folder.log_file if engine.is_main else None)
    for note in folder.notes:
        log.warning("%s", note)
    if t["bf16"] and not engines.bf16_is_native():
        log.warning(
            "trainer.bf16=true on a machine without bf16 instructions (%s): autocast emulates bf16, "
            "16-25x slower than fp32 here; set trainer.bf16=false for speed",
            _cpu_capability(),
        )
    if engine.world > 1:
        each = t["batch_size"] // engine.world
        log.info("%s: %d processes, %d examples each per step", engine.name, engine.world, each)

    task = build_task(cfg["task"])
    task.preflight()
    with recording_reads() as read:
        train_set = task.examples("train")[: t["train_limit"]] if t["max_steps"] != 0 else []
        whole = {s: task.examples(s) for s in task.eval_splits}
    eval_sets = {s: examples[: t["eval_limit"]] for s, examples in whole.items()}
    task.check_before_training(eval_sets)
    data = data_fingerprint(read, getattr(task, "dir", None))
    if checkpoint is not None:  # before any model loads: a resume must train on the data it began with
        note = engine.on_main(lambda: folder.check_data(checkpoint, data))
        if note:
            log.warning("%s", note)
    tokenizer = load_tokenizer(cfg["model"])
    rebuild = functools.partial(_model_for, cfg, task, tokenizer)
    model = rebuild()
    if t["packing"]:
        packing.enable(model)
    task = fitted(task, max_positions(model.config))
    if t["init_adapter"]:
        _init_from_adapter(model, Path(t["init_adapter"]))
    counts, special = lora.count(model), getattr(model, "special_tokens", None)
    log.info("model %s, method %s, task %s\n%s", cfg["model"]["name"], cfg["method"]["name"], task.name, counts)

    per_epoch = math.ceil(math.ceil(len(train_set) / t["batch_size"]) / t["grad_accum"])
    total = t["max_steps"] if t["max_steps"] is not None else math.ceil(per_epoch * t["epochs"])
    warmup = warmup_steps(t, total, task.max_length)
    groups = optimizers.param_groups(model, t["optimizer"], t["weight_decay"])
    model = engine.prepare(model, groups, t["lr"], warmup, total)
    length = batching.token_length(task, tokenizer, special)
    forwards = {s: eval_groups(t, items, length, task.max_length) for s, items in eval_sets.items()}
    r = _Run(cfg, engine, folder, task, tokenizer, model, train_set, eval_sets, forwards, length, counts, total,
             per_epoch, special, rebuild)  # fmt: skip
    # metrics.json says how much of each split was scored: a table heads a subset "dev accuracy, 64 of 872"
    r.eval_examples = {s: {"used": len(eval_sets[s]), "of": len(whole[s])} for s in whole}
    r.state = {"step": 0, "epoch": 0, "batch": 0, "evals": [], "best": None, "loss": None, "train_seconds": 0.0}
    if checkpoint is not None:
        r.state = checkpoints.restore(checkpoint, engine)
    r.state["data"] = data  # in every checkpoint (state.json): what a resume checks its data against
    if checkpoint is not None:
        log.info("resumed from %s at step %d", checkpoint, r.state["step"])
    elif folder.damaged:
        log.warning("no good checkpoint left: training starts from step 0")
    r.wandb_run = _wandb(cfg, folder.path) if cfg.get("logger", {}).get("wandb") and engine.is_main else None
    r.scalars = folder.scalars(r.state["step"], r.wandb_run) if engine.is_main else None
    code_version()  # read now, at the start (cached for the process): the commit metrics.json will name
    return r


def _model_for(cfg: dict, task: Task, tokenizer) -> torch.nn.Module:
    """The model this run trains (the method applied to the base model) or only evaluates
    (`trainer.eval_adapter`: a trained adapter loaded onto it, its own config and head)."""
    t = cfg["trainer"]
    if t["eval_adapter"]:
        return adapter_model(cfg["model"], t["eval_adapter"], task, tokenizer, t["seed"], alpha=t["adapter_alpha"])
    return prepared_model(cfg["model"], cfg["method"], task, tokenizer, t["seed"], dropout=t["base_dropout"])


def _loop(r: _Run, started: float) -> dict | None:
    """Optimizer steps until the run's last; returns a status if it stops early (trainer.stop_after)."""
    t, engine, state = r.cfg["trainer"], r.engine, r.state
    seen = 0
    r.model.train()
    bar = tqdm(total=r.total, initial=state["step"], desc=f"{r.cfg['method']['name']} {r.task.name}", unit="step",
               disable=None if engine.is_main else True)  # fmt: skip
    done = state["step"] >= r.total
    preemption = Preemption()  # SLURM's warning before a time limit or preemption: checkpoint, then requeue
    try:
        while not done:
            epoch_batches = batches(len(r.train_set), t["batch_size"], t["seed"], state["epoch"], engine.rank,
                                    engine.world)  # fmt: skip
            for first in range(state["batch"], len(epoch_batches), t["grad_accum"]):
                chunks = epoch_batches[first : first + t["grad_accum"]]
                micro = _micro_batches(r, chunks)
                loss = _accumulate(engine, r.model, r.task, micro, t["label_smoothing"])
                if not math.isfinite(loss):
                    _diverged(r.folder, r.cfg, state, loss, engine.is_main)
                engine.step()
                seen += sum(map(len, chunks)) * engine.world
                state["step"], state["batch"], state["loss"] = state["step"] + 1, first + len(chunks), loss
                bar.update(1)
                bar.set_postfix(loss=f"{state['loss']:.4f}", ex_per_s=f"{seen / (time.time() - started):.1f}")
                done = state["step"] >= r.total
                stopped = _after_step(r, started, done, preemption, bar)
                if stopped:
                    return stopped
                if done:
                    break
            else:
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
    finally:
        preemption.restore()
    bar.close()
    return None


def _micro_batches(r: _Run, chunks: list[list[int]]) -> list[dict]:
    """The tensors of one optimizer step's forwards: its chunks of the epoch's order as they are, or
    (trainer.length_batching) all its examples sorted by length, cut where it costs least (experiments.batching)."""
    t, task, tokenizer, special = r.cfg["trainer"], r.task, r.tokenizer, r.special
    if not t["length_batching"]:
        return [task.batch(tokenizer, [r.train_set[j] for j in chunk], special) for chunk in chunks]
    step = [j for chunk in chunks for j in chunk]
    for j in step:
        if j not in r.train_lengths:
            r.train_lengths[j] = r.length(r.train_set[j])
    gather = r.engine.gather if r.engine.world > 1 else None
    budget = batching.micro_batch_budget(t, task.max_length, r.engine.world)
    lengths = [r.train_lengths[j] for j in step]
    groups = batching.step_groups(lengths, budget, t["forward_cost_tokens"], gather, packed=t["packing"])
    return [task.batch(tokenizer, [r.train_set[step[i]] for i in group], special) for group in groups]


def _after_step(r: _Run, started: float, done: bool, preemption: Preemption, bar) -> dict | None:
    """Log, evaluate and checkpoint as the trainer config asks; hand over to the launcher when preempted."""
    t, engine, state = r.cfg["trainer"], r.engine, r.state
    eval_every = t["eval_every"] or r.per_epoch
    lr = engine.lr()
    if r.scalars is not None:
        r.scalars.log(state["step"], {"train/loss": state["loss"], "lr": lr})
    if state["step"] % t["log_every"] == 0:
        log.info("step %d loss %.4f lr %.2e", state["step"], state["loss"], lr)
    if state["step"] % eval_every == 0 or done:
        _evaluate_into(r)
    preempted = engine.any(preemption.requested is not None)  # all processes checkpoint together
    if state["step"] % (t["save_every"] or eval_every) == 0 or done or preempted:
        state["train_seconds"] = time.time() - started
        checkpoints.save(r.folder, engine, state)
    if preempted and not done:
        log.info("%s at step %d: checkpoint written; %s", preemption.name, state["step"], preemption.next_step)
        bar.close()
        preemption.hand_over()  # submitit's handler requeues the job and exits; without one, we exit
    if t["stop_after"] and state["step"] >= t["stop_after"] and not done:
        log.info("stopping at step %d (trainer.stop_after)", state["step"])
        bar.close()
        return {"status": "stopped", "step": state["step"]}
    return None


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
    with engine.accumulating():
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


def _agree_on_output_dir(t: dict, engine: engines.Engine):
    """Processes started a moment apart may resolve `${now:...}` to different folders: the main one's wins
    (Hydra already made the others' folder, which is removed if empty)."""
    ours, main = t["output_dir"], engine.broadcast(t["output_dir"])
    if ours != main:
        with contextlib.suppress(OSError):
            Path(ours).rmdir()
        t["output_dir"] = main


def warmup_steps(t: dict, total: int, max_length: int) -> int:
    """The warm-up in optimizer steps: trainer.warmup_steps when set, else trainer.warmup_tokens, else
    trainer.warmup_ratio of the `total` steps. Tokens are counted as the paper counts its GPT-3 warm-up
    (250,000 tokens, its Tables 12 and 17): every sequence at the task's max_length, batch_size x grad_accum
    sequences a step, rounded up, so a batch of 20 warms up for more steps than one of 128. A ratio is rounded up
    too, as HF Trainer's `get_warmup_steps` does (microsoft/LoRA's GLUE runs trained with it), in its order of
    operations, so the float product rounds alike (7% of 100 steps is 8: 100 x 0.07 is a hair above 7).

    >>> t = {"warmup_steps": 0, "warmup_tokens": 250_000, "warmup_ratio": 0.0, "batch_size": 16, "grad_accum": 8}
    >>> warmup_steps(t, 1000, 384), warmup_steps(t, 1000, 768), warmup_steps(t, 1000, 2048)
    (6, 3, 1)
    >>> [warmup_steps({**t, "warmup_tokens": 0, "warmup_ratio": 0.06}, n, 128) for n in (6, 50, 300)]
    [1, 3, 18]
    >>> warmup_steps({**t, "warmup_tokens": 0, "warmup_ratio": 0.07}, 100, 128)
    8
    """
    if t["warmup_steps"]:
        return t["warmup_steps"]
    if t["warmup_tokens"]:
        return math.ceil(t["warmup_tokens"] / (t["batch_size"] * t["grad_accum"] * max_length))
    return math.ceil(total * t["warmup_ratio"])


def _evaluate_into(r: _Run):
    engine, task, state = r.engine, r.task, r.state
    began = time.time()
    with engine.evaluating():
        scores = {
            split: evaluate(engine.module(), r.tokenizer, task, items, r.eval_groups[split], engine.device, engine)
            for split, items in r.eval_sets.items()
        }
    state["eval_seconds"] = state.get("eval_seconds", 0.0) + time.time() - began  # within train_seconds
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
        trained = engine.trainable_state()  # every process: partitioned parameters are gathered
        if engine.is_main:  # the adapter behind the reported number, kept (the last one may be worse)
            _write_adapter(engine.module(), trained, r.folder.best_adapter, r.cfg)
    log.info("eval step %d: %s", state["step"], ", ".join(f"{k} {v:.4f}" for k, v in record.items() if "/" in k))
    if r.scalars is not None:
        r.scalars.log(state["step"], {k: v for k, v in record.items() if "/" in k and isinstance(v, int | float)})


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


def _init_from_adapter(model, file: Path):
    """Copy the LoRA matrices of another run's adapter (the paper starts MRPC, RTE, STS-B from MNLI);
    the task head is new. The adapter's LoRA config must equal this run's."""
    ours = getattr(model, lora.model.CONFIG_ATTR, None)
    if ours is None:
        raise RunError("trainer.init_adapter needs a LoRA method; this run's method has no LoRA matrices")
    file = file if file.suffix else RunFolder(file).adapter
    tensors, meta = read_safetensors(file)
    theirs = config_from_meta(meta, file) if "lora_config" in meta else None
    keys = ("r", "alpha", "targets", "layers", "rslora")
    if theirs is None or any(getattr(theirs, k) != getattr(ours, k) for k in keys):
        raise RunError(f"{file} was trained with LoRA {theirs}; this run uses {ours}: they must agree on {keys}")
    load_tensors(model, {k: v for k, v in tensors.items() if ".lora_" in k}, source=file, base_model="?", partial=True)


def _write_adapter(model, tensors: dict | None, file: Path, cfg: dict):
    """The trained parameters (`tensors`, or the model's own) with what rebuilds the model: LoRA's config, or
    the method's (`baselines.load`); the base model by hub id or config name."""
    if getattr(model, lora.model.CONFIG_ATTR, None) is not None:
        lora.save(model, file, base_model=cfg["model"].get("hub") or cfg["model"]["name"], tensors=tensors)
    else:
        baselines.save(model, file, tensors)


def _finish(r: _Run, model, started: float) -> dict:
    """Write the trained parameters, let the task have its last word (NLG: decode the test set), write
    metrics.json, and drop the checkpoints: the adapter now holds the result."""
    cfg, folder, task, state = r.cfg, r.folder, r.task, r.state
    is_lora = getattr(model, lora.model.CONFIG_ATTR, None) is not None
    _write_adapter(model, None, folder.adapter, cfg)
    train_seconds = round(time.time() - started, 1)
    if is_lora and task.head == "causal_lm":
        lora.merge(model)  # NLG decoding, the last thing the task does, runs at the base model's speed
    model.eval()
    final_started = time.time()
    with recording_reads() as read:  # NLG: the test set, read only now
        last_word = task.final(model, r.tokenizer, folder.predictions, r.engine.device,
                               getattr(model, "special_tokens", None))  # fmt: skip
    data = state["data"]
    data = {**data, "files": {**data["files"], **data_fingerprint(read, data["root"])["files"]}}
    metrics = {
        "status": "complete",
        "model": cfg["model"]["name"],
        "method": cfg["method"]["name"],
        "task": task.name,
        "metric": f"{task.eval_splits[0]}/{task.metric}",
        "final": state["evals"][-1] if state["evals"] else {},
        "best": state["best"],
        "evals": state["evals"],
        "baseline": task.baseline(r.train_set, r.eval_sets),  # a constant answer's scores (GLUE: majority class)
        "eval_examples": r.eval_examples,
        **last_word,
        "steps": state["step"],
        "last_loss": state["loss"],
        "params": {"trainable": r.counts.trainable, "total": r.counts.total, "by_type": r.counts.by_type},
        "data": data,
        "wall_seconds": round(time.time() - started, 1),
        "train_seconds": train_seconds,
        "eval_seconds": round(state.get("eval_seconds", 0.0), 1),  # the evaluations during training
        "final_seconds": round(time.time() - final_started, 1),
        "adapters": {"last": folder.adapter.name, "best": folder.best_adapter.name, "best_step": state["best"]["step"]},
        **({"evaluated_adapter": cfg["trainer"]["eval_adapter"]} if cfg["trainer"]["eval_adapter"] else {}),
        **environment(),
    }
    folder.check_intact(folder.adapter, folder.best_adapter)  # never "done" over files that are not there
    folder.write_metrics(metrics)
    folder.drop_checkpoints()  # finished: the adapter holds the result, optimizer states are dead weight
    log.info("done: best %s = %.4f%s; run folder %s", metrics["metric"], state["best"][metrics["metric"]],
             "".join(f", {k} {v:.4f}" for k, v in last_word.get("test", {}).items()), folder.path)  # fmt: skip
    return metrics


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
        handlers.append(_LogFile(file))
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


class _LogFile(logging.FileHandler):
    """The run's log.txt. A line that cannot be written (a full disk) is said once, in one line on the terminal,
    and the file is given up: logging's default prints a traceback for it and for every later line."""

    failed = False

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        self.failed = True
        err = sys.exc_info()[1]
        with contextlib.suppress(OSError):
            self.close()
        why = getattr(err, "strerror", None) or err
        print(f"warning: cannot write {self.baseFilename} ({why}); the log goes on here only", file=sys.stderr)


def _wandb(cfg: dict, folder: Path):
    import os

    import wandb  # only when asked for: it is slow to import

    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(project=cfg["logger"]["project"], config=cfg, dir=str(folder), mode=mode)
