"""The one error users can fix themselves, and how a command-line entry turns it into one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, exit code 2, nothing written."""


def run_command(command: Callable[[], object]) -> int:
    """Run a command-line entry: 0 on success; bad input becomes one `error: ...` line on stderr and exit 2."""
    try:
        command()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
