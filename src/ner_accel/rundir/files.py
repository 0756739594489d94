"""Writing the run's files: atomic replaces, the user's umask, output paths checked before any work."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError, WriteFailed, write_failure


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
