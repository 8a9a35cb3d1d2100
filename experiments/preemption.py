"""The scheduler's warning before it stops a job: finish the step, write a checkpoint, then let the launcher
requeue (SLURM's ``--signal``, submitit's handler)."""

from __future__ import annotations

import signal
import threading


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
