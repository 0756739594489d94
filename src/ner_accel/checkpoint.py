"""Resumable checkpoints: written atomically, rotated, found again by `--resume latest` or a path."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

from .artifacts import write_json
from .errors import UsageError

STATE_FILE = "trainer_state.json"
LATEST = "latest"
BEST = "best"


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
        """Add an evaluation at the current step; the mean F1 over languages (or the one F1) decides the best."""
        self.history.append({"step": self.step, "epoch": self.epoch, "validation": results})
        f1 = results["mean_f1"] if "mean_f1" in results else next(iter(results.values()))["f1"]
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
        if "best_checkpoint" in data:  # written by ner_accel before best_step: "step-0000006" or None
            name = data.pop("best_checkpoint")
            data["best_step"] = int(name.removeprefix("step-")) if name else None
        return cls(**data)


class Checkpoints:
    """The run's checkpoints/ directory: step-NNNNNNN subdirectories plus `latest` and `best` pointer files."""

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.root = run_dir / "checkpoints"
        self.keep = keep

    def clear(self, accelerator: Accelerator) -> None:
        """Remove an earlier run's checkpoints (--overwrite): rotated together with this run's, its later steps
        would outlive ours and `latest` would point at a deleted one."""
        if accelerator.is_main_process and self.root.exists():
            shutil.rmtree(self.root)
        accelerator.wait_for_everyone()

    def _pointer(self, name: str) -> Path | None:
        pointer = self.root / name
        if not pointer.is_file():
            return None
        target = self.root / pointer.read_text().strip()
        return target if (target / STATE_FILE).is_file() else None

    def latest(self) -> Path | None:
        return self._pointer(LATEST)

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:07d}"

    def save(self, accelerator: Accelerator, state: TrainerState) -> Path:
        """Every process writes its part into a staging directory; the main process renames it into place,
        then moves `latest` (and `best`), so a crash mid-save leaves the previous checkpoint the latest."""
        target = self.path(state.step)
        name, is_best = target.name, state.best_step == state.step
        staging = self.root / f".{name}.tmp"
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging), safe_serialization=True)
        accelerator.wait_for_everyone()  # save_state has no barrier: rank 1 may still be writing its RNG state
        if accelerator.is_main_process:
            write_json(staging / STATE_FILE, asdict(state))
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            self._set_pointer(LATEST, name)
            if is_best:
                self._set_pointer(BEST, name)
            self._rotate(best=self.path(state.best_step).name if state.best_step is not None else None)
        accelerator.wait_for_everyone()
        return target

    def _set_pointer(self, pointer: str, name: str) -> None:
        temporary = self.root / f".{pointer}.tmp"
        temporary.write_text(name + "\n")
        temporary.replace(self.root / pointer)

    def _rotate(self, best: str | None) -> None:
        """Keep the newest `keep` checkpoints and the best one."""
        steps = sorted(p for p in self.root.glob("step-*") if p.is_dir())
        for old in steps[: -self.keep]:
            if old.name != best:
                shutil.rmtree(old)


def resolve_resume(resume: str, run_dir: Path) -> Path:
    """`latest` (this run's newest complete checkpoint) or an explicit checkpoint directory."""
    if resume == LATEST:
        found = Checkpoints(run_dir, keep=1).latest()
        if found is None:
            raise UsageError(
                f"--resume latest: {run_dir / 'checkpoints'} holds no complete checkpoint; start without --resume"
            )
        return found
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UsageError(
            f"--resume {resume}: not a ner_accel checkpoint (no {STATE_FILE}); pass a checkpoints/step-* directory or 'latest'"
        )
    return path


def load_trainer_state(checkpoint: Path, labels: list[str], settings: dict) -> TrainerState:
    """Read the loop position of a checkpoint and make sure this command continues the same run: same label set
    and the same settings that fix the batches and the schedule (else resume would silently not be that run)."""
    state = TrainerState.from_dict(json.loads((checkpoint / STATE_FILE).read_text()))
    if state.labels != labels:
        raise UsageError(
            f"--resume {checkpoint}: trained with labels {state.labels}, but this data has {labels}; "
            "resume with the same data or start a new run"
        )
    for name, was in state.settings.items():  # empty in checkpoints of versions before this check
        if settings.get(name) != was:
            raise UsageError(
                f"--resume {checkpoint}: trained with {name}={was}, this command has {settings.get(name)}; "
                "resume with the same settings (they fix the batches and the schedule) or start a new run"
            )
    state.settings = settings
    return state
