"""Resumable checkpoints: written atomically with checksums, rotated, verified and found again by `--resume`."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from safetensors import safe_open
from torch import nn
from torch.utils.serialization import config as serialization

from ..errors import UsageError, WriteFailed, write_failure
from ..training.trainer_state import TrainerState
from .files import honour_umask, write_json
from .integrity import CHECKSUMS, STATE_FILE, file_checksums, tensor_digest, verify

logger = logging.getLogger(__name__)

LATEST = "latest"
BEST = "best"
FROZEN = "frozen"  # in STATE_FILE: the sha256 of each frozen parameter the checkpoint leaves out
WEIGHTS = "model.safetensors"  # accelerate's name for the model's state in a checkpoint (without FSDP)


class Checkpoints:
    """The run's checkpoints/ directory: step-NNNNNNN subdirectories plus `latest` and `best` pointer files.

    Only the main process changes it, under the run directory's lock (run_lock.py). A checkpoint is complete once
    its trainer_state.json, written last with the checksums of every other file, is there; nothing complete is
    ever deleted before its replacement is in place, and the newest `keep` that verify stay.

    With `leave_out_frozen`, a checkpoint holds what the run changed and nothing it can load again: the frozen
    parameters (the word-embedding matrix beside its trained rows, modeling/trained_rows.py) are the model's as
    --model loads them, so the checkpoint keeps their sha256s instead of their values, and `load` checks them."""

    def __init__(self, run_dir: Path, keep: int, keep_best: bool = True, leave_out_frozen: bool = False) -> None:
        self.root = run_dir / "checkpoints"
        self.keep = keep
        self.keep_best = keep_best  # --load-best needs the best checkpoint at the end; nothing else does
        self.leave_out_frozen = leave_out_frozen
        self.frozen: dict[str, str] = {}  # name -> sha256 of each frozen parameter left out (they never change)
        self.saved: tuple[int, dict] | None = None  # the step and trainer state this object saved last

    def clear(self, accelerator: Accelerator) -> None:
        """Remove an earlier run's checkpoints (--overwrite): rotated together with this run's, its later steps
        would outlive ours and `latest` would point at a deleted one."""
        if accelerator.is_main_process and self.root.exists():
            discard(self.root)
        accelerator.wait_for_everyone()

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, if it holds a trainer state."""
        target = self._named(LATEST)
        return target if target is not None and (target / STATE_FILE).is_file() else None

    def _named(self, pointer: str) -> Path | None:
        try:
            return self.root / (self.root / pointer).read_text().strip()
        except OSError:
            return None

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:07d}"

    def newest_first(self) -> list[Path]:
        """The checkpoints `--resume latest` tries: the one `latest` names, then the older ones, newest first."""
        steps = sorted((p for p in self.root.glob("step-*") if p.is_dir()), reverse=True)
        named = self._named(LATEST)
        if named in steps:  # a newer one would belong to a timeline a resume from an older checkpoint left behind
            steps = [p for p in steps if p.name <= named.name]
        return steps

    def newest_good(self, excluding: Path | None = None) -> Path | None:
        """The newest checkpoint that verifies."""
        return next((p for p in self.newest_first() if p != excluding and verify(p) is None), None)

    def save(self, accelerator: Accelerator, state: TrainerState) -> Path:
        """Write the checkpoint of `state.step`, unless this very state is saved already (a stop signal right
        after a checkpoint). Every process writes its part into a staging directory; the main process adds
        trainer_state.json and renames it into place (replacing an earlier save of this step only once the new
        one is complete), then moves `latest` (and `best`). A failure on any process, a full disk above all,
        is agreed on by all of them: each raises the same WriteFailed, the partial files are removed, and the
        previous checkpoint stays the latest."""
        target = self.path(state.step)
        record = asdict(state)
        if self.saved == (state.step, record):
            return target
        staging = self.root / f".{target.name}.tmp"
        if accelerator.is_main_process:
            self.recover()  # leftovers of a killed save (a staging directory of this name among them)
        accelerator.wait_for_everyone()
        error = attempt(lambda: self._save_state(accelerator, staging))
        failure = agree(accelerator, describe(error, staging))  # also the barrier: rank 1 may still be writing
        if failure is None and accelerator.is_main_process:
            error = attempt(lambda: self._publish(staging, target, record))
        failure = agree(accelerator, describe(error, staging))
        if failure is not None:
            bug = error if error is not None and write_failure(error, staging) is None else None
            # A failed torch.save keeps its file open from the traceback, in a reference cycle: let go of it and
            # collect, so that the deleted partial file frees its space now, not when the process ends.
            error = None
            if accelerator.is_main_process:
                self.recover()
            gc.collect()
            if bug is not None:
                raise bug  # not the disk: it keeps its traceback
            raise WriteFailed(f"cannot write checkpoint {target} ({failure}); its partial files were removed", failure)
        self.saved = (state.step, record)
        return target

    def _save_state(self, accelerator: Accelerator, directory: Path) -> None:
        """save_state, leaving the frozen parameters out where this object does (accelerate's documented pre-save
        hook, for this one call: it hands over the state dicts about to be written; under FSDP there are none,
        and FSDP's own files keep everything). The main process notes their sha256s for trainer_state.json."""
        if not self.leave_out_frozen:
            return save_state(accelerator, directory)

        def without_frozen(models: list[nn.Module], weights: list[dict], output_dir: str) -> None:
            for model, state in zip(models, weights):
                for name, parameter in frozen_parameters(model).items():
                    del state[name]
                    if accelerator.is_main_process and name not in self.frozen:
                        self.frozen[name] = tensor_digest(parameter)

        handle = accelerator.register_save_state_pre_hook(without_frozen)
        try:
            save_state(accelerator, directory)
        finally:
            handle.remove()

    def load(self, accelerator: Accelerator, checkpoint: Path) -> None:
        """accelerator.load_state of a checkpoint (the model, optimizer, scheduler and random states). The frozen
        parameters it left out stay as --model loaded them, once their sha256s show they are the ones the run was
        trained with; a UsageError on every process otherwise."""
        left_out = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")).get(FROZEN) or {}

        def check_left_out(models: list[nn.Module], input_dir: str) -> None:
            with safe_open(Path(input_dir) / WEIGHTS, "pt") as stored:
                names = set(stored.keys())
            for model in models:
                frozen = {name: p for name, p in frozen_parameters(model).items() if name in left_out}
                missing = sorted(set(model.state_dict()) - names - set(frozen))
                if missing:
                    raise UsageError(
                        f"--resume {checkpoint}: {WEIGHTS} has no {missing[0]}: not a checkpoint of this model; "
                        "resume with the --model it was trained from, or start a new run: the same command "
                        "without --resume, plus --overwrite"
                    )
                for name, parameter in frozen.items():
                    if tensor_digest(parameter) != left_out[name]:
                        raise UsageError(
                            f"--resume {checkpoint}: {name} of this --model is not the one the run was trained with "
                            "(the checkpoint keeps the sha256 of this frozen parameter, not its values); resume with "
                            "the model files the run started from, or start a new run: the same command without "
                            "--resume, plus --overwrite"
                        )

        if not left_out:  # a checkpoint with every parameter (FSDP, leave_out_frozen off, an older version)
            accelerator.load_state(str(checkpoint))
            return
        handle = accelerator.register_load_state_pre_hook(check_left_out)
        try:
            accelerator.load_state(str(checkpoint), strict=False)  # strict but for the frozen: check_left_out
        finally:
            handle.remove()
        self.frozen.update(left_out)  # checked: the next saves need not hash them again

    def _publish(self, staging: Path, target: Path, record: dict) -> None:
        """Complete the staging directory and swap it in. Everything that needs disk space comes first, so a
        full disk stops the save before anything has moved; then only renames, and deletions last."""
        left_out = {FROZEN: dict(self.frozen)} if self.leave_out_frozen and self.frozen else {}
        write_json(staging / STATE_FILE, {**record, **left_out, CHECKSUMS: file_checksums(staging)})
        honour_umask(staging)
        pointers = [LATEST, BEST] if self.keep_best and record["best_step"] == record["step"] else [LATEST]
        prepared = {pointer: self._prepare_pointer(pointer, target.name) for pointer in pointers}
        retired = None
        if target.exists():  # saved before at this step: the final evaluation after a --checkpoint-steps save
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(retired)
        staging.rename(target)
        for pointer, temporary in prepared.items():
            temporary.replace(self.root / pointer)
        if retired is not None:
            shutil.rmtree(retired)
        best = self.path(record["best_step"]).name if self.keep_best and record["best_step"] is not None else None
        self._rotate(target, best)

    def _prepare_pointer(self, pointer: str, name: str) -> Path:
        temporary = self.root / f".{pointer}.tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(name + "\n")
        return temporary

    def _rotate(self, newest: Path, best: str | None) -> None:
        """Keep the newest `keep` checkpoints that verify, `newest` (just written, its checksums just taken from its
        files) among them, and the best one where it is kept. A damaged checkpoint does not count, so the good
        one before it stays: a newest checkpoint damaged after it was written leaves an older one to resume from.
        What is newer than `newest` goes too: a resume from an older checkpoint left it behind, on a timeline
        that is no longer the run's (newest_first ignores it already)."""
        good = 0
        for path in sorted((p for p in self.root.glob("step-*") if p.is_dir()), reverse=True):
            if path.name > newest.name or (good >= self.keep and path.name != best):
                discard(path)
            elif good < self.keep:
                problem = None if path == newest else verify(path)
                if problem is None:
                    good += 1
                else:
                    logger.warning(f"checkpoint {path.name} is damaged ({problem}); the one before it is kept too")

    def recover(self) -> None:
        """Tidy what a killed or failed save left, so its disk space comes back: staging directories, pointer
        temporaries and checkpoints being deleted go; a checkpoint moved aside by a replacement that never
        completed comes back (it was complete). Main process only, under the run lock."""
        if not self.root.is_dir():
            return
        for leftover in sorted(self.root.glob(".*")):
            name = leftover.name
            if ".old-" in name:
                original = self.root / name[1:].split(".old-")[0]
                if not original.exists():
                    leftover.rename(original)
                    continue
            if name.endswith((".tmp", ".deleting")) or ".old-" in name:
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink(missing_ok=True)


def discard(path: Path) -> None:
    """Delete a directory by first renaming it to a leftover name: killed midway, it never looks complete."""
    doomed = path.with_name(f".{path.name}.deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    path.rename(doomed)
    shutil.rmtree(doomed)


def frozen_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters no optimizer step changes, by their state-dict names (each name of a shared one)."""
    return {name: p for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def save_state(accelerator: Accelerator, directory: Path) -> None:
    """Accelerate's save of model, optimizer, scheduler and RNG states, without zip CRC32s in torch.save's files:
    the checkpoint's sha256s (integrity.py) cover the same bytes, and the CRCs cost 3x the write of the optimizer's
    moments (2.4 s against 0.6 s for 768 MB on this project's CPU)."""
    with serialization.patch({"save.compute_crc32": False}):
        accelerator.save_state(str(directory), safe_serialization=True)


def attempt(action) -> Exception | None:
    """Run `action`; the exception it raised, if any (processes must agree on it before anyone raises)."""
    try:
        action()
    except Exception as error:
        return error
    return None


def describe(error: Exception | None, place: Path) -> str | None:
    """What went wrong, in a few words, for the one-line message (None: nothing did)."""
    if error is None:
        return None
    first_line = next(iter(str(error).splitlines()), "")
    return write_failure(error, place) or f"{type(error).__name__}: {first_line}"


def agree(accelerator: Accelerator, failure: str | None) -> str | None:
    """The first process's failure, known to every process: a collective, so it is also a barrier."""
    if accelerator.num_processes == 1:
        return failure
    return next((f for f in gather_object([failure]) if f is not None), None)


# ---------------------------------------------------------------------------------------------------------------
# Resuming


def resolve_resume(resume: str, run_dir: Path, accelerator: Accelerator | None = None) -> Path:
    """`latest` (this run's newest checkpoint that verifies) or an explicit checkpoint directory, which must
    verify. Decided on the main process, which reads every file once, and the same on every process."""
    if accelerator is None:  # one process
        return find_checkpoint(resume, run_dir)
    answer = [None, None]
    if accelerator.is_main_process:
        try:
            answer = [str(find_checkpoint(resume, run_dir)), None]
        except UsageError as error:
            answer = [None, str(error)]
    path, refusal = broadcast_object_list(answer)
    if refusal is not None:
        raise UsageError(refusal)
    return Path(path)


def find_checkpoint(resume: str, run_dir: Path) -> Path:
    """resolve_resume's answer, on one process: the checkpoint, or a UsageError naming the damaged file and the
    one command that works next (never one that is refused in turn)."""
    checkpoints = Checkpoints(run_dir, keep=1)
    checkpoints.recover()  # a replacement killed midway: the checkpoint it had moved aside comes back
    if resume == LATEST:
        problems = []
        for candidate in checkpoints.newest_first():
            problem = verify(candidate)
            if problem is None:
                return candidate
            logger.warning(f"--resume latest: skipping {candidate.name}: {problem}")
            problems.append(f"{candidate.name}: {problem}")
        if not problems:
            raise UsageError(f"--resume latest: {run_dir} holds no checkpoint, so there is nothing to resume; "
                             f"{start_again(run_dir)}")  # fmt: skip
        raise UsageError(
            f"--resume latest: no checkpoint in {checkpoints.root} verifies (the newest, {problems[0]}), so nothing "
            f"can be resumed; {start_again(run_dir)}"
        )
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        good = checkpoints.newest_good()
        advice = f"pass --resume latest to continue from {good}" if good else start_again(run_dir)
        raise UsageError(f"--resume {resume}: not a ner_accel checkpoint (no {STATE_FILE}); {advice}")
    problem = verify(path)
    if problem is not None:
        beside = Checkpoints(path.parent.parent, keep=1)  # the checkpoints/ this one sits in
        good = beside.newest_good(excluding=path) or checkpoints.newest_good(excluding=path)
        if good is not None:
            raise UsageError(
                f"--resume {resume}: {problem}; the newest good checkpoint is {good} (pass --resume {good})"
            )
        raise UsageError(f"--resume {resume}: {problem}; no other checkpoint verifies; {start_again(run_dir)}")
    return path


def has_checkpoints(run_dir: Path) -> bool:
    """Whether the run directory holds checkpoints, complete or damaged (what a killed save left does not count)."""
    root = run_dir / "checkpoints"
    return root.is_dir() and any(p.is_dir() for p in root.glob("step-*"))


def start_again(run_dir: Path) -> str:
    """The command that starts the run from the beginning: without --resume, plus --overwrite where the run
    directory's checkpoints would refuse a new run (artifacts.check_run_dir)."""
    if has_checkpoints(run_dir):
        return "start it again with the same command without --resume, plus --overwrite"
    return "start it with the same command without --resume"


def resume_hint(run_dir: Path) -> str:
    """After a failed write: the checkpoint a resume would start from, and the command."""
    latest = Checkpoints(run_dir, keep=1).latest()
    if latest is None:
        return "no checkpoint was saved yet: free space (or fix the disk), then run the same command again"
    return (
        f"the last good checkpoint is {latest}: free space (or fix the disk), "
        "then resume with the same command plus --resume latest"
    )


def load_trainer_state(checkpoint: Path, labels: list[str], settings: dict) -> TrainerState:
    """Read the loop position of a checkpoint and make sure this command continues the same run: same label set
    and the same settings that fix the batches and the schedule (else resume would silently not be that run)."""
    state = TrainerState.from_dict(json.loads((checkpoint / STATE_FILE).read_text()))
    if state.labels != labels:
        raise UsageError(
            f"--resume {checkpoint}: trained with labels {state.labels}, but this data has {labels}; "
            "resume with the same data, or start a new run: the same command without --resume, plus --overwrite (or "
            "another --run-name)"
        )
    for name, was in state.settings.items():  # empty in checkpoints of versions before this check
        if settings.get(name) != was:
            raise UsageError(
                f"--resume {checkpoint}: trained with {name}={was}, this command has {settings.get(name)}; "
                "resume with the same settings (they fix the batches and the schedule), or start a new run: the same "
                "command without --resume, plus --overwrite (or another --run-name)"
            )
    state.settings = settings
    return state
