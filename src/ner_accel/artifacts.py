"""The run directory: atomic writes, the resolved config, metrics.json and the per-entity report."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .console import report_text
from .errors import UsageError

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.json"
REPORT_FILE = "report.txt"
HTML_REPORT = "report.html"


@contextmanager
def atomic_directory(target: Path):
    """Yield a temporary directory beside `target`; on success it replaces `target` in one rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
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


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file and an atomic replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
    return (run_dir / MODEL_DIR / "config.json").is_file() and (run_dir / METRICS_FILE).is_file()


def check_run_dir(run_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to mix a new run into a directory that holds another run's finished results."""
    if is_finished(run_dir) and not overwrite:
        raise UsageError(
            f"{run_dir}: already holds a finished run; pass --overwrite to replace it or --run-name for a new one"
        )
    if (
        not resuming
        and not overwrite
        and (run_dir / "checkpoints").is_dir()
        and any((run_dir / "checkpoints").iterdir())
    ):
        raise UsageError(
            f"{run_dir}: holds checkpoints of an unfinished run; pass --resume latest to continue it or --overwrite"
        )


def save_final(
    run_dir: Path, model, tokenizer, history: list[dict], results: dict[str, dict], state_dict: dict | None = None
) -> None:
    """The model in plain transformers form, its tokenizer, every evaluation and the final per-entity report.

    state_dict: the full weights when the model's own are sharded (FSDP), from accelerator.get_state_dict."""
    with atomic_directory(run_dir / MODEL_DIR) as staging:
        model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
    (run_dir / REPORT_FILE).write_text(report_text(results), encoding="utf-8")
    write_json(run_dir / METRICS_FILE, {"evaluations": history, "final": results})
