"""One run per run directory: an OS-level lock (flock on <run_dir>/.lock) held by the job's main process.

The kernel drops the lock when its holder exits however it exits, SIGKILL included; the file's text (host, pid,
start time) only names the holder in the refusal, and a stale file whose lock is free stops no one. Only the
global main process (rank 0) takes it, since it alone writes the run directory (the others only add their random
state to a checkpoint it stages); the others wait for its answer and refuse together with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..errors import UsageError, WriteFailed, write_failure

LOCK_FILE = ".lock"


@dataclass
class HeldLock:
    path: Path
    descriptor: int
    created: list[Path]  # directories that taking the lock made, deepest first: removed again if left empty


held: dict[Path, HeldLock] = {}  # run directory -> its lock, for this process's lifetime (or until released)


def lock_run_dir(run_dir: Path, accelerator: Accelerator) -> None:
    """Take the run directory's lock on the main process; if it cannot, every process raises its error."""
    refusal = [None]
    if accelerator.is_main_process:
        try:
            acquire(run_dir)
        except (UsageError, WriteFailed) as error:
            refusal = [error]
    (refusal,) = broadcast_object_list(refusal)
    if refusal is not None:
        raise refusal


def acquire(run_dir: Path) -> None:
    """flock(LOCK_EX | LOCK_NB) on <run_dir>/.lock, kept open; UsageError naming the holder if it is taken."""
    key = run_dir.absolute()
    if key in held and is_current(held[key]):
        return
    created = [p for p in [key, *key.parents] if not p.exists()]
    path = key / LOCK_FILE
    while True:
        try:
            key.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            reason = write_failure(error, key)
            raise WriteFailed(f"cannot create the run directory's lock file {path} ({reason})", reason) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 4096).decode(errors="replace").strip() or "it is starting"
            os.close(descriptor)
            raise UsageError(
                f"{run_dir} is in use by another ner_accel run ({holder}); "
                "wait for it to finish or pass another --run-name/--output-dir"
            ) from None
        lock = HeldLock(path, descriptor, created)
        if is_current(lock):
            break
        os.close(descriptor)  # the holder unlinked the file between our open and our lock: lock the new one
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError):  # the text only names the holder; a full disk must not stop the run here
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"host {socket.gethostname()}, pid {os.getpid()}, started {started}\n".encode())
    held[key] = lock


def is_current(lock: HeldLock) -> bool:
    """Whether the locked file is still the one at its path."""
    try:
        return os.fstat(lock.descriptor).st_ino == os.stat(lock.path).st_ino
    except FileNotFoundError:
        return False


def release_run_locks() -> None:
    """Release every run-directory lock this process holds: unlink the file while still holding it (a process
    that opened it meanwhile sees it gone and retries), then unlock, then remove directories that only the lock
    had created (a refused run leaves nothing behind)."""
    for lock in held.values():
        if is_current(lock):
            lock.path.unlink(missing_ok=True)
        os.close(lock.descriptor)
        for directory in lock.created:
            try:
                directory.rmdir()
            except OSError:  # not empty: the run wrote something
                break
    held.clear()
