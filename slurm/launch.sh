#!/usr/bin/env bash
# The body of slurm/torchrun.sbatch and slurm/deepspeed.sbatch: one torchrun per node (srun), the nodes
# meeting at the first node's rendezvous, then `run.py` with the trainer and overrides given.
#
#   launch.sh TRAINER [override ...]        TRAINER: ddp, deepspeed_zero2, deepspeed_zero3, deepspeed_zero3_offload
#
# Environment: PYTHON (default: the repository's .venv, activated, else python3), NPROC_PER_NODE (default:
# the GPUs SLURM gave each node, else 1), RDZV_PORT (default: from the job id, so that two jobs sharing a
# node do not meet at one port), MAX_REQUEUES (20). The run folder is runs/slurm-JOBID unless an override
# names trainer.output_dir, so a requeued job (same id) resumes its own run. Several nodes need the
# repository (and runs/) on a file system they all see.
#
# Preemption and time limits: submit with --signal=B:USR2@SECONDS. This script then stops the training
# processes with SIGTERM (the trainer finishes its step, writes a checkpoint and exits) and requeues the job;
# the requeued job resumes from that checkpoint. torchrun kills its processes TORCH_ELASTIC_SHUTDOWN_TIMEOUT
# seconds after a SIGTERM (its default, 30, is short for a step, an evaluation and a checkpoint): 150 here.
set -euo pipefail

ROOT=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT"
[ -f run.py ] || { echo "error: submit from the repository root (run.py not found in $ROOT)" >&2; exit 2; }
TRAINER=${1:?"usage: launch.sh TRAINER [override ...]"}
shift
if [ -z "${PYTHON:-}" ]; then  # activated: DeepSpeed builds its CPU Adam with the venv's ninja
  if [ -f .venv/bin/activate ]; then . .venv/bin/activate; PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
RDZV_PORT=${RDZV_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-150}
NODES=${SLURM_NNODES:-1}
NPROC_PER_NODE=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
HEAD=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" | head -n 1)
OUTPUT="trainer.output_dir=runs/slurm-${SLURM_JOB_ID:-local}"
for arg in "$@"; do [[ $arg == trainer.output_dir=* ]] && OUTPUT=""; done

step=""
requeue() {
  echo "launch.sh: SIGUSR2 (time limit or preemption near): checkpointing, then requeueing job $SLURM_JOB_ID"
  # SIGTERM to the step's tasks (torchrun forwards it to its processes); signalling srun itself would make it
  # kill the step at once, before any checkpoint
  scancel --signal=TERM "$SLURM_JOB_ID.0" || true
  [ -n "$step" ] && wait "$step" || true
  if [ "${SLURM_RESTART_COUNT:-0}" -ge "${MAX_REQUEUES:-20}" ]; then
    echo "launch.sh: not requeued: job $SLURM_JOB_ID already ran ${SLURM_RESTART_COUNT} times (MAX_REQUEUES)" >&2
    exit 1
  fi
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
}
trap requeue USR2

echo "launch.sh: $NODES node(s) x $NPROC_PER_NODE processes, trainer=$TRAINER, rendezvous $HEAD:$RDZV_PORT"
# --cpus-per-task again: some SLURM versions (22.05-23.02) do not pass the job's on to srun's step
srun --ntasks-per-node=1 --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"} \
  "$PYTHON" -m torch.distributed.run --nnodes "$NODES" --nproc_per_node "$NPROC_PER_NODE" \
  --rdzv_id "${SLURM_JOB_ID:-0}" --rdzv_backend c10d --rdzv_endpoint "$HEAD:$RDZV_PORT" \
  run.py "trainer=$TRAINER" ${OUTPUT:+"$OUTPUT"} "$@" &
step=$!
wait "$step"
