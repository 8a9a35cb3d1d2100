"""Where a run trains: one process, or several started by torchrun. Chosen by `trainer.engine`.

    single     one process (a CPU or one GPU), through accelerate
    ddp        DistributedDataParallel through accelerate: every process holds the whole model
    deepspeed  DeepSpeed ZeRO (`trainer.zero_stage` 2: optimizer states and gradients partitioned, 3: the
               parameters too; `trainer.offload`: optimizer states, and at stage 3 the parameters, in CPU memory)

    torchrun --nproc_per_node 2 run.py trainer=ddp ...
    torchrun --nproc_per_node 2 run.py trainer=deepspeed_zero3 ...

`trainer.batch_size` is the global batch: each optimizer step sees the same examples whatever the number of
processes, each process a 1/N slice, so a run's hyperparameters (and its result, up to float rounding and
dropout's random masks) do not depend on how it is launched (with `trainer.bf16`, DeepSpeed's bf16 mode keeps
bf16 weights and an fp32 master copy where the others autocast: runs differ by more than rounding there).
The trainer talks to an engine only through the methods of `Engine`; the collective ones must be called by
every process.

DeepSpeed is driven directly rather than through accelerate's integration: on CPU that integration runs every
process as rank 0 (measured with accelerate 1.15, ../shared/notes/cpu-feasibility.md section 7).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from lora.state import load_tensors, trainable_state

from . import optimizers

ENGINES = ("single", "ddp", "deepspeed")


class EngineError(ValueError):
    """A launch that cannot work as configured; the message says why and what to do."""


def create(t: dict) -> Engine:
    """The engine `trainer.engine` names, for the processes torchrun started (one without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if t["engine"] not in ENGINES:
        raise EngineError(f"unknown trainer.engine {t['engine']!r}; choose from {', '.join(ENGINES)}")
    if t["engine"] == "single" and world > 1:
        raise EngineError(
            f"launched as {world} processes but trainer.engine=single; use trainer=ddp or trainer=deepspeed_zero2 "
            "(or zero3, zero3_offload), or launch one process"
        )
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        raise EngineError(  # `srun --ntasks=8 python run.py`: 8 separate runs into one folder
            f"started as one of {os.environ['SLURM_STEP_NUM_TASKS']} SLURM tasks without torchrun; start one "
            "torchrun per node (slurm/launch.sh does) or run one task"
        )
    if t["batch_size"] % world:
        raise EngineError(f"trainer.batch_size={t['batch_size']} is the global batch: it must divide evenly "
                          f"among the {world} processes")  # fmt: skip
    if t["offload"] and t["engine"] != "deepspeed":
        raise EngineError("trainer.offload needs trainer.engine=deepspeed (e.g. trainer=deepspeed_zero3_offload)")
    if t["offload"] and t["optimizer"] != "adamw":
        raise EngineError(f"trainer.offload runs DeepSpeed's own CPU AdamW: it cannot run trainer.optimizer="
                          f"{t['optimizer']}; set trainer.optimizer=adamw or trainer.offload=false")  # fmt: skip
    if not torch.cuda.is_available():  # else DeepSpeed, imported by accelerate, warns of it on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return DeepSpeed(t) if t["engine"] == "deepspeed" else Accelerate(t)


def bf16_is_native() -> bool:
    """Whether this machine computes bfloat16 in hardware: a GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (oneDNN's own check). Elsewhere autocast emulates bf16 in software: on an AVX2-only AMD EPYC (2026-12-07), a
    384 -> 1536 linear layer's forward and backward took 16-25x as long as in fp32, at 1 and 2 threads."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def leave_process_group():
    """Destroy the process group, after a barrier that every process reaches.

    Why the barrier: gloo's worker threads release a finished collective's tensors on their own thread, which
    takes the GIL; if the main thread has already returned and the interpreter is finalizing, that thread
    aborts the whole process ("terminate called without an active exception", SIGABRT; torch 2.13,
    pytorch/pytorch#190489). `destroy_process_group` does not join those threads. The barrier carries no
    tensor and holds the main thread, GIL released, until the other processes have arrived, by which time the
    workers are done. Measured on two-process plans that end with a run stopped right after a collective:
    4 of 65 aborted without the barrier, 0 of 50 with it."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class Engine:
    """What the trainer needs from a way of running: set-up, one micro-step's backward, the optimizer step,
    the trained parameters and the optimizer's state, and agreement between processes."""

    rank: int = 0
    world: int = 1
    device: torch.device
    name: str  # for the log

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- agreement between processes (no-ops for one process) ---

    def broadcast(self, obj):
        """The main process's `obj`, on every process."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn):
        """`fn()` run by the main process only; its result, or its error, reaches every process, so a
        refusal on the main process stops the others with the same line instead of leaving them waiting."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as err:  # re-raised below, on every process
                error = err
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def total(self, value: float) -> float:
        """The sum of `value` over the processes (a step's loss terms and token counts)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.item()

    def any(self, flag: bool) -> bool:
        """True on every process if it is true on one (a signal reaches processes at different steps)."""
        return self.total(float(flag)) > 0

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        """Leave the process group (only the engine that made it does)."""
        if self._owns_group:
            leave_process_group()

    @property
    def _comm_device(self):
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # --- training; each engine implements these ---

    def prepare(self, model: nn.Module, param_groups: list[dict], lr: float, warmup: int, total: int) -> nn.Module:
        """Wrap the model and build AdamW with a linear warmup-then-decay schedule; returns the model to call."""
        raise NotImplementedError

    def autocast(self):
        """The context of one forward and its loss."""
        return contextlib.nullcontext()

    def accumulating(self):
        """The context of one optimizer step's forwards and backwards (the model is not evaluated inside)."""
        return contextlib.nullcontext()

    def evaluating(self):
        """The context of an evaluation's forwards."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor):
        """Accumulate the gradients of `loss`, already weighted by its share of the global step; the
        engines average gradients over processes, so the trainer also multiplies by their number."""
        raise NotImplementedError

    def step(self):
        """Clip, step the optimizer and the schedule, clear the gradients."""
        raise NotImplementedError

    def lr(self) -> float:
        raise NotImplementedError

    def module(self) -> nn.Module:
        """The model without its wrapper: what evaluation calls (no gradient synchronisation needed)."""
        raise NotImplementedError

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters, whole, on the CPU (collective: partitioned ones are gathered)."""
        return trainable_state(self.module())

    def save_state(self, folder: Path) -> dict:
        """The optimizer's and schedule's state: returned to be saved by the main process, or written into
        `folder` by every process (partitioned states). Collective."""
        raise NotImplementedError

    def load_state(self, folder: Path, tensors: dict, saved: dict):
        """Restore the trained parameters and what `save_state` saved, from checkpoint `folder`."""
        raise NotImplementedError

    def final_model(self, state: dict, rebuild) -> nn.Module:
        """On the main process: a plain model holding the trained parameters, for what a run does last
        (saving, merging, decoding). `rebuild()` makes a fresh prepared model where the parameters are
        partitioned across processes."""
        return self.module()


FP32_ATTENTION = "sdpa_fp32"  # the name transformers' attention registry knows it by


def attention_in_fp32(model: nn.Module) -> nn.Module:
    """Under bf16 autocast on the CPU, a model's SDPA attention computes in fp32 (its projections stay in bf16).

    torch's CPU flash-attention kernel, which SDPA runs where attention has no dropout (Llama's; BERT's in
    evaluation), is about 9x slower backward in bf16 than in fp32 (torch 2.13, a CPU with AMX; MiniLM-L6, 16
    micro-batches of 8: 449 ms against 49 ms). On SmolLM2-135M (batch 8 x 64, one thread) a bf16 step took 1.45 s
    with it and 1.29 s with attention in fp32, against 2.43 s for the fp32 step. In fp32 the projections' bf16
    outputs enter attention exactly and only its output is rounded. fp32 inputs are untouched (the outputs stay
    bitwise those of "sdpa"); models whose attention is not transformers' SDPA (DeBERTa's own) are left alone.
    """
    _register_fp32_attention()
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(FP32_ATTENTION)
    return model


@functools.cache
def _register_fp32_attention():
    """Once a process: transformers' registries learn FP32_ATTENTION, with SDPA's mask (registered without one,
    transformers builds no mask at all)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def sdpa_in_fp32(module, query, key, value, attention_mask, **kwargs):
        with torch.autocast(query.device.type, enabled=False):
            out, weights = sdpa_attention_forward(
                module, query.float(), key.float(), value.float(), attention_mask, **kwargs
            )
        return out.to(query.dtype), weights

    AttentionInterface.register(FP32_ATTENTION, sdpa_in_fp32)
    AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)


def frozen_matmul_weights_in_bf16(model: nn.Module) -> dict[nn.Parameter, torch.Tensor]:
    """A bf16 copy of every frozen weight and bias that only linear layers (nn.Linear, GPT-2's Conv1D) use.

    Autocast casts a linear layer's fp32 weight to bf16 at every forward and caches the cast only for trainable
    weights: on MiniLM-L6's micro-batches of 8 short sentences, casting the frozen weights was 20% of a bf16
    training step. Holding these copies during a step's forwards and backwards, and an evaluation's (`holding`),
    computes the same values (the cast is the same rounding, done once), for half those weights' fp32 memory again.
    Weights tied to an embedding (GPT-2's output layer) keep fp32: an embedding's lookup is not autocast, its output
    would change dtype.
    """
    users: dict[nn.Parameter, set[bool]] = {}
    for module in model.modules():
        is_linear = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
        for param in module.parameters(recurse=False):
            users.setdefault(param, set()).add(is_linear)
    return {p: p.detach().to(torch.bfloat16) for p, linear in users.items() if linear == {True} and not p.requires_grad}


@contextlib.contextmanager
def holding(copies: dict[nn.Parameter, torch.Tensor]):
    """Each parameter holds its copy's values for the duration (a swap of storage, not a copy of it)."""
    originals = {p: p.data for p in copies}
    for p, copy in copies.items():
        p.data = copy
    try:
        yield
    finally:
        for p, data in originals.items():
            p.data = data


class Accelerate(Engine):
    """One process, or DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPUs)."""

    def __init__(self, t: dict):
        from accelerate import Accelerator

        self.t = t
        self._owns_group = False  # accelerate's state owns it
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if t["bf16"] else "no")
        if self.accelerator.gradient_accumulation_steps != 1:  # it would divide the loss the trainer already weighs
            raise EngineError(
                f"ACCELERATE_GRADIENT_ACCUMULATION_STEPS={self.accelerator.gradient_accumulation_steps} is set; "
                "unset it and use trainer.grad_accum"
            )
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        self.name = t["engine"]

    def close(self):
        """Forget accelerate's per-process settings (its AcceleratorState is a singleton that refuses another
        mixed_precision), so the next run in this process, a sweep's next job, may set its own trainer.bf16.
        accelerate's own test cases reset it this way between tests; the process group (PartialState) stays."""
        from accelerate.state import AcceleratorState

        super().close()
        AcceleratorState._reset_state(reset_partial_state=False)

    def prepare(self, model, param_groups, lr, warmup, total):
        from transformers import get_linear_schedule_with_warmup

        self.frozen_bf16 = {}
        if self.t["bf16"] and self.device.type == "cpu":
            attention_in_fp32(model)
            self.frozen_bf16 = frozen_matmul_weights_in_bf16(model)
        optimizer = optimizers.build(self.t["optimizer"], param_groups, lr, self.t["adam_eps"])
        self.scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        return self.model

    def autocast(self):
        return self.accelerator.autocast()

    def accumulating(self):
        return holding(self.frozen_bf16)

    def evaluating(self):
        return holding(self.frozen_bf16)

    def backward(self, loss):
        self.accelerator.backward(loss)

    def step(self):
        if self.t["max_grad_norm"]:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.t["max_grad_norm"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self):
        return self.scheduler.get_last_lr()[0]

    def module(self):
        # DDP's inner module (its forward under accelerate's autocast), as accelerate's `unwrap_model` finds it,
        # which imports DeepSpeed to check for its engine: 0.3 s of a 50 s job, for an engine never used here.
        return self.model.module if isinstance(self.model, nn.parallel.DistributedDataParallel) else self.model

    def save_state(self, folder):
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state(self, folder, tensors, saved):  # another engine's checkpoint: refused by the config check
        load_tensors(self.module(), tensors, source=folder, base_model="this run's model")
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])


class DeepSpeed(Engine):
    """DeepSpeed ZeRO stage 2 or 3 on every process torchrun started (gloo on CPU, NCCL on GPUs)."""

    TAG = "zero"  # the one DeepSpeed checkpoint inside each of our checkpoint folders

    def __init__(self, t: dict):
        try:
            import deepspeed
        except ImportError as err:
            raise EngineError(
                f"trainer.engine=deepspeed needs DeepSpeed ({err}); install it with pip install -e '.[deepspeed]'"
            ) from None
        if t["zero_stage"] not in (2, 3):
            raise EngineError(f"trainer.zero_stage must be 2 or 3, got {t['zero_stage']}")
        self.t, self.deepspeed = t, deepspeed
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        self._owns_group = not dist.is_initialized()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self._env = {}  # one process, no torchrun: a group of one, described as torchrun would (until close)
        if "WORLD_SIZE" not in os.environ:
            self._env = dict(
                RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
            )
            os.environ.update(self._env)
        ops_beside_the_venv()
        refuse_stale_op_locks()
        with _quiet_op_builds():
            deepspeed.init_distributed(dist_backend=backend, verbose=False)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.name = f"DeepSpeed ZeRO-{t['zero_stage']}" + (" with CPU offload" if t["offload"] else "")
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")

    def close(self):
        super().close()
        for key in self._env:
            os.environ.pop(key, None)

    def config(self) -> dict:
        t, zero = self.t, {"stage": self.t["zero_stage"]}
        if t["offload"]:
            zero["offload_optimizer"] = {"device": "cpu"}
            if t["zero_stage"] == 3:
                zero["offload_param"] = {"device": "cpu"}
        return {
            "train_micro_batch_size_per_gpu": t["batch_size"] // self.world,
            "gradient_accumulation_steps": t["grad_accum"],
            # the trainer decides where an accumulation ends (an epoch's last micro-batches may be fewer)
            "managed_gradient_accumulation": False,
            "gradient_clipping": t["max_grad_norm"] or 0.0,
            # gradients averaged over the processes, as DDP does (the trainer's loss weights count on it)
            "gradient_predivide_factor": 1.0,
            "prescale_gradients": False,
            "zero_optimization": zero,
            "bf16": {"enabled": bool(t["bf16"])},
            "zero_allow_untested_optimizer": True,  # ours (experiments/optimizers.py), as every other engine
            "steps_per_print": 2**31 - 1,
        }

    def prepare(self, model, param_groups, lr, warmup, total):
        from transformers import get_linear_schedule_with_warmup

        if self.t["offload"]:  # DeepSpeed refuses another optimizer for offloaded states (and its own is faster)
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            try:
                optimizer = DeepSpeedCPUAdam(param_groups, lr=lr, adamw_mode=True)
            except Exception as err:  # its C++ extension is compiled here, on first use; many ways to fail
                raise EngineError(
                    f"DeepSpeed could not build its CPU Adam ({type(err).__name__}: {str(err).splitlines()[0]}); "
                    "it needs ninja and a C++ compiler on PATH (activate the venv), or use trainer=deepspeed_zero3"
                ) from None
        else:
            optimizer = optimizers.build(self.t["optimizer"], param_groups, lr, self.t["adam_eps"])
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        self.engine, _, _, _ = self.deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.config()
        )
        assert getattr(self.engine, "gradient_average", True), "DeepSpeed must average gradients over processes"
        return self.engine

    def backward(self, loss):
        self.engine.backward(loss, scale_wrt_gas=False)

    def step(self):
        self.engine.step()  # clips, steps the optimizer and the schedule, clears the gradients

    def lr(self):
        return self.engine.get_lr()[0]

    def module(self):
        return self.engine.module

    def trainable_state(self):
        if self.t["zero_stage"] < 3:  # stage 2 keeps whole parameters on every process
            return trainable_state(self.engine.module)
        named = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]
        with self.deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().clone().cpu() for n, p in named}

    def save_state(self, folder):
        # DeepSpeed's own checkpoint: each process writes its partition of the optimizer's states
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag=self.TAG, save_latest=False,
                                    exclude_frozen_parameters=True)  # fmt: skip
        return {}

    def load_state(self, folder, tensors, saved):  # another engine or process count: refused before this
        path, _ = self.engine.load_checkpoint(str(folder / "deepspeed"), tag=self.TAG, load_module_strict=False)
        if path is None:
            raise EngineError(f"DeepSpeed could not read its checkpoint in {folder}; start a new trainer.output_dir")

    def final_model(self, state, rebuild):
        if self.t["zero_stage"] < 3:
            return self.engine.module
        model = rebuild()  # stage 3 holds only a slice of each parameter here: a whole copy for the last part
        load_tensors(model, state, source="the trained parameters", base_model="this run's model")
        return model.to(self.device)


@contextlib.contextmanager
def _quiet_op_builds():
    """DeepSpeed probes and builds its C++ ops on the CPU at set-up: the compiler's command lines go to the
    root logger and "... built successfully" to stdout, on every run. Both are held back here; they are
    printed if the set-up fails, where they say why."""
    root, level, held = logging.getLogger(), logging.getLogger().level, io.StringIO()
    root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        root.setLevel(level)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ops_beside_the_venv() -> None:
    """DeepSpeed compiles its CPU ops (CPU Adam, shared-memory collectives) on first use, into
    $TORCH_EXTENSIONS_DIR: by default one folder per user, shared by every venv. Their build lines name the venv's
    torch, so two checkouts rebuild each other's ops at 1-3 minutes a build (measured: both ops rebuilt on each
    switch between two clones). Unless the user set it, the folder is the venv's own, where `make install` builds
    them (`build_deepspeed_ops`)."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")


STALE_LOCK_SECONDS = 15 * 60  # a build of both ops takes about 4 minutes on 2 cores


def stale_op_locks(max_age: float = STALE_LOCK_SECONDS) -> list[Path]:
    """Build locks older than any build: torch's compile takes `OP/lock` and waits, with no end, while it exists;
    a build killed midway leaves it, and every later run then hangs on it without a word."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    now = time.time()
    return sorted(lock for lock in root.glob("**/lock") if now - lock.stat().st_mtime > max_age)


def refuse_stale_op_locks():
    stale = stale_op_locks()
    if stale:
        raise EngineError(f"{stale[0]} is {(time.time() - stale[0].stat().st_mtime) / 60:.0f} min old: a DeepSpeed op "
                          "build was killed and left it, and the next build would wait on it forever; delete it "
                          "(make install removes it)")  # fmt: skip


def build_deepspeed_ops() -> list[str]:
    """Compile DeepSpeed's CPU ops now (`make install`), not in the first run or test that needs them; returns one
    line per op. A failed build is said in one line and left to the run that needs it, which says why again."""
    if not torch.cuda.is_available():  # as `build` does: DeepSpeed would warn that it guessed
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return ["DeepSpeed is not installed: no ops to build"]
    ops_beside_the_venv()
    lines = []
    for lock in stale_op_locks(max_age=0):  # at install no other build runs: every lock is a killed build's
        lock.unlink()
        lines.append(f"removed {lock}, left by a killed build")
    for name in ("CPUAdamBuilder", "ShareMemCommBuilder"):
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            lines.append(f"DeepSpeed op {name}: not available on this machine, not built")
            continue
        try:
            with _quiet_op_builds():
                builder.load(verbose=False)
            lines.append(f"DeepSpeed op {builder.NAME}: built in {os.environ['TORCH_EXTENSIONS_DIR']}")
        except Exception as err:  # a compiler missing, a failed build: many ways to fail, none fatal here
            lines.append(f"DeepSpeed op {builder.NAME} did not build ({type(err).__name__}); runs needing it retry")
    return lines


if __name__ == "__main__":  # make install: python -m experiments.engines
    print("\n".join(build_deepspeed_ops()))
