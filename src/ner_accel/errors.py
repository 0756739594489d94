"""The errors users can fix themselves (bad input, a full or failing disk) and how a command-line entry turns each
into one line on stderr: exit code 2 for bad input, 1 for a write that failed."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2, nothing written."""


class WriteFailed(Exception):
    """A file could not be written (disk full, quota, I/O error): one line naming what and where, exit code 1."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # why, in a few words ("No space left on device"), for messages that wrap this one

    def __reduce__(self):  # pickled whole when the main process hands it to the others
        return WriteFailed, (str(self), self.reason)


FULL_BELOW_BYTES = 2**20  # free space under which a write that failed without an errno is put down to a full disk


def write_failure(error: BaseException, place: Path) -> str | None:
    """Why a write into `place` failed, in a few words, when it is a failed write, else None (a bug, which keeps its
    traceback). Decided by facts: an OSError anywhere in the chain of errors (libraries clean up and fail again)
    gives its own reason; a library error that lost the errno (torch's zip writer, safetensors and tokenizers,
    written in C++ and Rust) counts as a full disk when the file system under `place` has no space left. Call it
    before the partial files are removed: they are what filled the disk."""
    seen, chain = set(), []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for link in chain:
        if isinstance(link, WriteFailed):
            return link.reason
        if isinstance(link, OSError):
            return link.strerror or str(link) or os.strerror(link.errno or errno.EIO)  # an OSError raised bare
    return os.strerror(errno.ENOSPC) if free_bytes(place) < FULL_BELOW_BYTES else None


def free_bytes(place: Path) -> int:
    """Free bytes on the file system holding `place` (its nearest existing ancestor)."""
    existing = next((p for p in [Path(place).absolute(), *Path(place).absolute().parents] if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def say(line: str, exit_code: int) -> int:
    """Print one line on stderr in a single write (the lines of a job's processes never interleave); return the code."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    return exit_code


class Stopped(Exception):
    """The command stopped before its end and says why in one line, with its own exit code (a signal, a
    non-finite loss): what it had saved is named in the line."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code


def run_command(command: Callable[[], object], aborted: str = "aborted; nothing was written") -> int:
    """Run a command-line entry, the same for every command: 0 on success; bad input becomes one `error: ...` line
    on stderr and exit 2, a failed write one line and exit 1, a stop its own line and code, Ctrl-C `aborted`
    and 130. No traceback reaches the user for any of them."""
    try:
        command()
    except UsageError as error:
        return say(f"error: {error}", 2)
    except WriteFailed as error:
        return say(f"error: {error}", 1)
    except Stopped as stopped:
        return say(str(stopped), stopped.exit_code)
    except KeyboardInterrupt:
        return say(aborted, 130)
    return 0
