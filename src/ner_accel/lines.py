"""Numbered lines of a UTF-8 text file, with the one-line error users need when a line is not UTF-8."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .config import UsageError


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for each line; a leading byte-order mark is dropped.

    Lines are decoded one at a time, so a bad byte is reported at its own line rather than somewhere in the
    block a text-mode file happened to be reading.
    """
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise UsageError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[error.start]:#04x} at column {error.start + 1}); "
                    "convert the file to UTF-8"
                ) from None
            yield number, line.rstrip("\r\n")
