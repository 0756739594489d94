"""The run directory: atomic writes, the resolved config, metrics.json and the per-entity report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .console import report_text
from .errors import UsageError, WriteFailed, write_failure

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.json"
REPORT_FILE = "report.txt"
# What a kill leaves in the run directory: the model's staging or retired copy, a temporary file, checkpoints
# that --overwrite was deleting.
LEFTOVERS = (f".{MODEL_DIR}.tmp-*", f".{MODEL_DIR}.old-*", ".*.tmp", ".*.deleting")


@contextmanager
def atomic_directory(target: Path):
    """Yield a temporary directory beside `target`; on success it replaces `target` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        honour_umask(staging)
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def honour_umask(directory: Path) -> None:
    """Give a finished directory tree the modes the user's umask asks for. mkdtemp makes its directory private
    (0700) and safetensors its files (0600), which would keep colleagues on a shared file system out of the model."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and an atomic replace: readers never see half a file, and a failed write
    (a full disk) leaves the old file, no temporary, and a WriteFailed naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as error:
        reason = write_failure(error, path)
        raise WriteFailed(f"cannot write {path} ({reason})", reason) from None
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    """JSON through write_text."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def writable_place(path: Path, flag: str) -> None:
    """Refuse, before any work and without creating anything, a path whose nearest existing ancestor is a file
    or not writable (the path itself may not exist yet)."""
    existing = next(p for p in [path.absolute(), *path.absolute().parents] if p.exists())
    if existing != path.absolute() and not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a directory; pass another path")
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK):
        raise UsageError(f"{flag} {path}: {existing} is not writable; pass a writable path")


def check_output_file(path: str, flag: str) -> None:
    """An output file path that can be written: not empty, not a directory, in a writable place."""
    if not path or Path(path).name in ("", ".", ".."):
        raise UsageError(f"{flag} {path!r}: not a file path; pass e.g. {flag} results.json")
    if Path(path).is_dir():
        raise UsageError(f"{flag} {path}: is a directory; pass a file path inside it")
    writable_place(Path(path), flag)


def check_output_dir(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: is a file, not a directory; pass a directory path")
    writable_place(path, flag)


def is_finished(run_dir: Path) -> bool:
    """model/ (config, weights, tokenizer), the resolved config and metrics.json, which save_final writes last: a
    final save that was interrupted never looks finished."""
    model = run_dir / MODEL_DIR
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return (
        all((model / name).is_file() for name in ("config.json", "tokenizer_config.json"))
        and any((model / name).is_file() for name in weights)
        and all((run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE))
    )


def check_run_dir(run_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to mix a new run into a directory that holds another run's finished results or checkpoints."""
    if is_finished(run_dir) and not overwrite:
        raise UsageError(
            f"{run_dir}: already holds a finished run; pass --overwrite to replace it or --run-name for a new one"
        )
    checkpoints = run_dir / "checkpoints"
    # Complete checkpoints only: what a killed or failed save left (.step-*.tmp) is no run to continue.
    if not resuming and not overwrite and checkpoints.is_dir() and any(checkpoints.glob("step-*")):
        interrupted = (run_dir / MODEL_DIR).exists() or any(run_dir.glob(f".{MODEL_DIR}.*"))
        raise UsageError(
            f"{run_dir}: holds checkpoints of an unfinished run"
            + (" (its final save was interrupted)" if interrupted else "")
            + "; pass --resume latest to continue it or --overwrite"
        )


def remove_leftovers(run_dir: Path) -> None:
    """Remove what a final save killed midway left behind, so its disk space comes back."""
    for pattern in LEFTOVERS:
        for path in run_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def save_final(
    run_dir: Path, model, tokenizer, history: list[dict], results: dict[str, dict], state_dict: dict | None = None
) -> None:
    """The model in plain transformers form, its tokenizer, every evaluation and the final per-entity report.

    metrics.json goes first and comes back last, so that the directory counts as finished (is_finished) only
    once everything is complete, and an earlier run's metrics never vouch for a model that is half replaced.
    state_dict: the full weights when the model's own are sharded (FSDP), from accelerator.get_state_dict."""
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    remove_leftovers(run_dir)
    target = run_dir / MODEL_DIR
    try:
        with atomic_directory(target) as staging:
            model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(staging)
    except Exception as error:
        reason = write_failure(error, target)
        if reason is None:
            raise
        raise WriteFailed(
            f"cannot write the final model to {target} ({reason}); its partial files were removed", reason
        ) from None
    write_text(run_dir / REPORT_FILE, report_text(results))
    write_json(run_dir / METRICS_FILE, {"evaluations": history, "final": results})
