"""Writing the run's files: atomic replaces, the user's umask, output paths checked before any work."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError, WriteFailed, write_failure


@contextmanager
def atomic_write(target: Path, subject: str | None = None, directory: bool = False) -> Iterator[Path]:
    """Yield a staging path beside `target` (a file, or with `directory` a directory) to write; once the block has
    written it, it replaces `target` in one rename, with the user's umask. Every file a run writes goes through
    here, with one failure behaviour: a failed write (errors.write_failure, decided before the partial files go)
    raises WriteFailed with one line naming `subject` (default: the path) and why; the staging is removed whatever
    happened, and an earlier `target` stays whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:  # private until complete (mkdtemp's 0700); the umask's modes once it is
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:  # the run lock (or predict's single writer) keeps this name to one writer
        staging = target.with_name(f".{target.name}.tmp")
    try:
        yield staging
        if directory:
            honour_umask(staging)
            if target.exists():
                retired = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(retired)
                staging.rename(target)
                shutil.rmtree(retired)
                return
        os.replace(staging, target)
    except Exception as error:
        reason = write_failure(error, target)
        other_file = isinstance(error, OSError) and error.filename is not None  # e.g. the input being read
        if reason is None or (other_file and not Path(error.filename).absolute().is_relative_to(staging.absolute())):
            raise
        removed = "its partial files were removed" if directory else "the partial file was removed"
        raise WriteFailed(f"cannot write {subject or target} ({reason}); {removed}", reason) from None
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)


def honour_umask(directory: Path) -> None:
    """Give a finished directory tree the modes the user's umask asks for. mkdtemp makes its directory private
    (0700) and safetensors its files (0600), which would keep colleagues on a shared file system out of the model."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_text(path: Path, text: str, subject: str | None = None) -> None:
    """Write a text file through atomic_write: readers never see half a file, a failed write leaves the old one."""
    with atomic_write(path, subject) as staging, open(staging, "w", encoding="utf-8") as stream:
        stream.write(text)


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
