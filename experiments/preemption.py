"""The scheduler's warning before it stops a job: finish the step, write a checkpoint, then let the launcher
requeue (SLURM's ``--signal``, submitit's handler)."""

from __future__ import annotations

import signal
import threading


class Preemption:
    """Catches the signal a scheduler sends before it stops a job (SIGUSR2 from submitit's sbatch
    ``--signal``, SIGTERM), and Ctrl-C (SIGINT), so the loop can finish its step and write a checkpoint
    first; then the handler that was there before (submitit's: requeue and exit) runs, or the process exits
    with 128 + the signal. Only in the main thread."""

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: tuple | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._catch)

    def _catch(self, signum, frame):
        if signum == signal.SIGINT and self.requested and self.requested[0] == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the step to end
        self.requested = (signum, frame)

    @property
    def name(self) -> str:
        return signal.Signals(self.requested[0]).name if self.requested else ""

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @property
    def next_step(self) -> str:
        if self.requested and self._launcher(self.requested[0]):
            return "the launcher requeues"
        return "run the same command again to resume"

    def _launcher(self, signum) -> bool:
        """A handler of a launcher (submitit's) to hand over to; Python's own Ctrl-C handler is none: it would
        only turn the interruption into a KeyboardInterrupt traceback."""
        handler = self.previous.get(signum)
        return callable(handler) and handler is not signal.default_int_handler

    def hand_over(self):
        signum, frame = self.requested
        self.restore()
        if self._launcher(signum):
            self.previous[signum](signum, frame)  # submitit: checkpoint the submission, requeue, exit
        raise SystemExit(128 + signum)  # no launcher to hand over to: stop, as the signal asked
