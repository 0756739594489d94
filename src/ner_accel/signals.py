"""Stop cleanly on SIGTERM/SIGINT: finish the optimizer step, checkpoint, tell the user how to resume."""

from __future__ import annotations

import signal

import torch
from accelerate import Accelerator

AGREE_EVERY = 10  # optimizer steps between the processes' agreement on a received signal


class Preempted(Exception):
    """SIGTERM/SIGINT arrived: the run saved a checkpoint and stops."""

    def __init__(self, checkpoint, signal_number: int) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint, self.signal_number = checkpoint, signal_number


class StopSignal:
    """Record SIGTERM/SIGINT (Slurm --signal, spot notices, Ctrl-C) so the loop stops after the current step."""

    def __enter__(self) -> StopSignal:
        self.received = 0
        self.previous = {number: signal.signal(number, self._handle) for number in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        self.received = number

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
