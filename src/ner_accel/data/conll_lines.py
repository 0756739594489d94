"""A CoNLL-style file's lines grouped by sentence, before anyone decides what its columns mean: blank lines (and
lines of invisible characters only) end a sentence, -DOCSTART- lines go, '#' lines stay marked for the layout to
judge (comments, or '#' tokens)."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .lines import numbered_lines

logger = logging.getLogger(__name__)


@dataclass
class Row:
    """One non-blank line: its number, its columns, and whether it starts with '#' (a comment or a '#' token)."""

    number: int
    columns: list[str]
    hash_line: bool = False
    leading: bool = False  # a '#' line before the first other line of its sentence


def is_invisible(text: str) -> bool:
    """Only whitespace and characters that print nothing (byte-order marks, zero-width spaces, controls)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in text)


def split_columns(line: str) -> list[str]:
    """Tab-separated where the line has a tab, else whitespace-separated."""
    return line.split("\t") if "\t" in line else line.split()


def conll_sentences(path: Path) -> tuple[list[list[Row]], list[str] | None, dict[str, list[int]]]:
    """The non-blank lines of a CoNLL file grouped by sentence; CoNLL-U Plus column names; odd lines by kind.

    -DOCSTART- lines are dropped; a line of invisible characters only is blank; a byte-order mark that starts a
    line (files joined with cat) is dropped. '#' lines stay, marked: the layout tells comments from '#' tokens."""
    sentences, sentence, names = [], [], None
    odd: dict[str, list[int]] = {"invisible": [], "bom": []}
    for number, line in numbered_lines(path):
        line = line.rstrip()  # trailing spaces or tabs are not an empty tag column
        if line and not line[0].isprintable() and is_invisible(line):  # a visible first character: not invisible
            odd["invisible"].append(number)
            line = ""
        elif line.startswith("\ufeff"):
            odd["bom"].append(number)
            line = line.lstrip("\ufeff")
        if not line:
            if sentence:
                sentences.append(sentence)
                sentence = []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        if line.startswith("#") and line[1:].strip().lower().startswith("global.columns"):
            names = line.split("=", 1)[-1].split()  # CoNLL-U Plus: "# global.columns = ID FORM ..."
            continue
        hashed = line.startswith("#")
        sentence.append(Row(number, split_columns(line), hashed, hashed and all(r.hash_line for r in sentence)))
    if sentence:
        sentences.append(sentence)
    return sentences, names, odd


def warn_odd_lines(path: Path, odd: dict[str, list[int]]) -> None:
    for kind, what in (
        ("invisible", "a line of invisible characters only (a stray byte-order mark or zero-width space), read as "
         "a blank line: a sentence break"),
        ("bom", "a byte-order mark (U+FEFF) at the start of the line (files joined together?), dropped"),
    ):  # fmt: skip
        lines = odd[kind]
        if lines:
            more = f"; {len(lines)} such lines: {', '.join(map(str, lines[:5]))}{', ...' if len(lines) > 5 else ''}"
            logger.warning("%s:%d: %s%s", path, lines[0], what, more if len(lines) > 1 else "")
