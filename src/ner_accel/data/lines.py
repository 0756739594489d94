"""Numbered lines of a UTF-8 text file, with the one-line error users need when a line is not UTF-8."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for each line (\\n, \\r\\n or \\r); a leading byte-order mark is dropped."""
    try:
        with path.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise not_utf8(path, error) from None


def not_utf8(path: Path, error: UnicodeDecodeError) -> UsageError:
    """The error naming the first line that does not decode (text mode reads in blocks, so find it again)."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as bad:
                return UsageError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[bad.start]:#04x} at column {bad.start + 1}); "
                    "convert the file to UTF-8"
                )
    return UsageError(f"{path}: not UTF-8 text ({error.reason}); convert the file to UTF-8")
