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
    history: list[dict] = field(default_factory=list)
    best_f1: float = -1.0
    best_checkpoint: str | None = None
    evaluations_since_best: int = 0
    settings: dict = field(default_factory=dict)  # TrainConfig.loop_settings: a resume must match them


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

    def save(self, accelerator: Accelerator, state: TrainerState, is_best: bool = False) -> Path:
        """Every process writes its part into a staging directory; the main process renames it into place,
        then moves `latest` (and `best`), so a crash mid-save leaves the previous checkpoint the latest."""
        name = f"step-{state.step:07d}"
        staging, target = self.root / f".{name}.tmp", self.root / name
        if accelerator.is_main_process and staging.exists():
            shutil.rmtree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging), safe_serialization=True)
        accelerator.wait_for_everyone()  # save_state has no barrier: rank 1 may still be writing its RNG state
        if is_best:  # on every process: each one loads it back under --load-best
            state.best_checkpoint = name
        if accelerator.is_main_process:
            write_json(staging / STATE_FILE, asdict(state))
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            self._set_pointer(LATEST, name)
            if is_best:
                self._set_pointer(BEST, name)
            self._rotate(state.best_checkpoint)
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
    state = TrainerState(**json.loads((checkpoint / STATE_FILE).read_text()))
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
