"""Stop cleanly on SIGTERM/SIGINT: finish the optimizer step (or the final save), checkpoint, say how to resume."""

from __future__ import annotations

import signal
import sys

import torch
from accelerate import Accelerator

AGREE_EVERY = 10  # optimizer steps between the processes' agreement on a received signal


class Preempted(Exception):
    """SIGTERM/SIGINT arrived: the run saved what it had (a checkpoint, or the final model) and stops."""

    def __init__(self, saved, signal_number: int, finished: bool = False) -> None:
        super().__init__(str(saved))
        self.saved, self.signal_number, self.finished = saved, signal_number, finished

    def line(self) -> str:
        """What the user reads: what was saved, and how to go on."""
        if self.finished:
            return f"stopped by signal {self.signal_number} after the run finished; model saved to {self.saved}"
        return (
            f"stopped by signal {self.signal_number}; checkpoint saved to {self.saved}. Resume with the same command "
            "plus --resume latest"
        )


class StopSignal:
    """Record SIGTERM/SIGINT (Slurm --signal, spot notices, Ctrl-C) so the run stops after the current step.

    The first Ctrl-C is acknowledged at once; a second one aborts where it stands (KeyboardInterrupt), which loses
    no checkpoint, since checkpoints are renamed into place only once complete.
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # one process of a job says it, not every one

    def __enter__(self) -> StopSignal:
        self.received = 0
        self.previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if number == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = number
        if self.announce:
            name = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name
            again = "; press Ctrl-C again to abort" if number == signal.SIGINT else ""
            sys.stderr.write(f"\n{name}: stopping after this step, once it is saved{again}\n")

    def requested(self, accelerator: Accelerator, step: int) -> bool:
        """All processes must stop at the same step, so with several the flag is all-reduced: every
        AGREE_EVERY steps, not every step, to keep the host sync off the hot path (the stop comes at most that late)."""
        if accelerator.num_processes == 1:
            return bool(self.received)
        if step % AGREE_EVERY:
            return False
        flag = torch.tensor(float(self.received), device=accelerator.device)
        self.received = int(accelerator.reduce(flag, "max").item())
        return bool(self.received)
