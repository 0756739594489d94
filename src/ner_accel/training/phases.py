"""Wall-clock seconds per phase of a run (tokenizing, training, evaluating, checkpointing, saving)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Phases:
    """Seconds spent in each named phase, each counted once: a phase entered inside another (an evaluation inside
    the training loop) is taken out of the outer one. The end-of-run summary shows them, metrics.json keeps them,
    and the benchmarks read them there instead of timing the loop from outside."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.open: list[str] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.seconds.setdefault(name, 0.0)
        self.open.append(name)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.open.pop()
            self.seconds[name] += elapsed
            if self.open:
                self.seconds[self.open[-1]] -= elapsed

    def finished(self) -> dict[str, float]:
        """The seconds of the phases that have ended (the final save, still running when metrics.json is written,
        is left out of it)."""
        return {name: seconds for name, seconds in self.seconds.items() if name not in self.open}
