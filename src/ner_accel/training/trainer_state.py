"""Where the training loop stands: step, epoch, history, the best F1 and patience; saved with every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def headline_f1(results: dict[str, dict]) -> float:
    """The F1 that stands for an evaluation: the mean over languages, or the one language's F1."""
    return results["mean_f1"] if "mean_f1" in results else next(iter(results.values()))["f1"]


@dataclass
class TrainerState:
    """Where the loop stands: enough, with accelerate's state, to continue exactly where it stopped."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    labels: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # logged losses and evaluations, in step order
    best_f1: float = -1.0
    best_step: int | None = None  # the evaluated step with the best F1 so far
    evaluations_since_best: int = 0
    settings: dict = field(default_factory=dict)  # TrainConfig.loop_settings: a resume must match them
    # The training loss since the last logged step (summed over processes) and its number of optimizer steps:
    # a resumed run logs the uninterrupted run's curve.
    unlogged_loss: float = 0.0
    unlogged_steps: int = 0

    def advance(self, micro_batches: int, steps_per_epoch: int) -> bool:
        """Count one optimizer step of `micro_batches`; True when it ends its epoch (the next one starts at 0)."""
        self.step += 1
        self.batches_in_epoch += micro_batches
        if self.step % steps_per_epoch:
            return False
        self.epoch, self.batches_in_epoch = self.epoch + 1, 0
        return True

    def record_evaluation(self, results: dict[str, dict]) -> None:
        """Add an evaluation at the current step; its headline F1 decides the best."""
        self.history.append({"step": self.step, "epoch": self.epoch, "validation": results})
        f1 = headline_f1(results)
        if f1 > self.best_f1:
            self.best_f1, self.best_step, self.evaluations_since_best = f1, self.step, 0
        else:
            self.evaluations_since_best += 1

    def out_of_patience(self, patience: int | None) -> bool:
        """Early stopping: the last `patience` evaluations found no better F1."""
        return patience is not None and self.evaluations_since_best >= patience

    def evaluations(self) -> dict[int, dict]:
        """Each evaluated step's results."""
        return {entry["step"]: entry["validation"] for entry in self.history if "validation" in entry}

    @classmethod
    def from_dict(cls, data: dict) -> TrainerState:
        data = {key: value for key, value in data.items() if key in FIELDS}  # e.g. not the checksums beside it
        if "best_checkpoint" in data:  # written by ner_accel before best_step: "step-0000006" or None
            name = data.pop("best_checkpoint")
            data["best_step"] = int(name.removeprefix("step-")) if name else None
        return cls(**data)


FIELDS = {f.name for f in fields(TrainerState)} | {"best_checkpoint"}
