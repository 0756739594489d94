"""Which column of a CoNLL-style file holds the words and which the tags, read off the file or refused.

Published corpora put more than a token and a tag on a line: CoNLL-2003 adds POS and chunk tags, CoNLL-U and
GermEval 2014 start with an index that counts the words of each sentence, GermEval adds a nested tag level. The
rules, on the lines of one file: a column that counts 1, 2, 3 (or 0, 1, 2) within each sentence is an index, never
the words; a column whose values are mostly tags holds tags; of several, CoNLL-2000 chunk tags (NP, VP, ...) are
set aside, and one whose entities all lie inside another's is the nested level (the outer one is read, and the log
says so); anything else with several tag columns is refused with the columns found and the flag to pass. The words
are the first remaining column after the index (CoNLL-U's FORM), skipping columns with one value on every line.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .conll_lines import Row
from .tag_schemes import is_tag

# CoNLL-2000's chunk types: a column of these is syntax (CoNLL-2003's third column), not entities.
CHUNK_TYPES = frozenset({"NP", "VP", "PP", "ADJP", "ADVP", "SBAR", "PRT", "CONJP", "INTJ", "LST", "UCP"})
# Header words that name a column; a first line holding one of them (and no tag where the tags are) is a header.
COLUMN_NAMES = frozenset(
    {"token", "tokens", "word", "words", "form", "text", "surface", "tag", "tags", "ner", "ner_tag", "ner_tags",
     "label", "labels", "entity", "entities", "bio", "iob", "iob2", "id", "idx", "index", "lemma", "pos", "upos",
     "xpos", "chunk", "feats", "head", "deprel", "deps", "misc"}
)  # fmt: skip
CONLLU_EXTRA_ID = re.compile(r"\d+[-.]\d+")  # CoNLL-U's multiword-token ranges (1-2) and empty nodes (8.1)
INTEGER = re.compile(r"-?\d+")

logger = logging.getLogger(__name__)


@dataclass
class Layout:
    """Where the words and tags are (column references: 0-based, or negative from the end in ragged files)."""

    token: int
    tag: int
    index: int | None = None
    header_line: int | None = None
    names: list[str] | None = None
    width: int = 2
    uniform: bool = True
    notes: list[str] = field(default_factory=list)

    def name(self, ref: int) -> str:
        label = f"column {ref}"
        if self.names and self.uniform and 0 <= ref < len(self.names):
            label += f" ({self.names[ref]})"
        return label

    def is_comment(self, row: Row) -> bool:
        """A '#' line is a comment in a file with an index column (CoNLL-U), and before a sentence unless it has
        the file's columns and a tag where the tags are (a '#' token, as in MultiCoNER's comment-free files)."""
        if not row.hash_line:
            return False
        if self.index is not None:
            return True
        if not row.leading:
            return False
        if len(row.columns) < self.width or (self.uniform and len(row.columns) != self.width):
            return True
        return not is_tag(row.columns[self.tag].strip(), "auto")

    def is_extra_node(self, row: Row) -> bool:
        """CoNLL-U's multiword-token and empty-node lines (1-2, 8.1): not words of the sentence."""
        return self.index is not None and bool(CONLLU_EXTRA_ID.fullmatch(row.columns[self.index]))


def column_ref(value: str | int | None) -> int | str | None:
    """A --token-column/--tag-column value: an int (0-based, negative from the end) or a header name."""
    if value is None or isinstance(value, int):
        return value
    return int(value) if INTEGER.fullmatch(value.strip()) else value.strip()


# ---------------------------------------------------------------------------------------------------------------
# Detection


def values(rows: Sequence[Row], ref: int) -> list[str]:
    return [row.columns[ref].strip() for row in rows]


def is_index(sentences: Sequence[Sequence[Row]], ref: int) -> bool:
    """The column counts the words: 0, 1, 2 or 1, 2, 3 in each sentence, or on through the file (CoNLL-U's
    multiword ranges and empty nodes aside)."""
    numbers = []
    for sentence in sentences:
        kept = [row.columns[ref].strip() for row in sentence]
        kept = [value for value in kept if not CONLLU_EXTRA_ID.fullmatch(value)]
        if not kept or not all(value.isdigit() for value in kept):
            return False
        numbers.append([int(value) for value in kept])
    if not numbers:
        return False
    consecutive = all(b == a + 1 for counts in numbers for a, b in zip(counts, counts[1:]))
    restarts = all(counts[0] == numbers[0][0] and counts[0] in (0, 1) for counts in numbers)
    continues = len(numbers) > 1 and all(later[0] == earlier[-1] + 1 for earlier, later in zip(numbers, numbers[1:]))
    return sum(map(len, numbers)) > 1 and consecutive and (restarts or continues)


def entity_rows(column: Sequence[str]) -> set[int]:
    return {i for i, value in enumerate(column) if value != "O"}


def describe(column: Sequence[str]) -> str:
    kinds = sorted({value[2:] for value in column if value != "O" and len(value) > 2})
    return ", ".join(kinds[:4]) + (", ..." if len(kinds) > 4 else "") if kinds else "O only"


def resolve(value: int | str, flag: str, names: list[str] | None, width: int, uniform: bool, path: Path) -> int:
    """A user's column: a name looked up in the header, or an index within the widest line (from the end counted
    from the start where every line has the same columns)."""
    if isinstance(value, str):
        if not names:
            raise UsageError(
                f"{flag} {value}: {path} has no header line naming its columns; pass a 0-based column number "
                f"(its lines have {width} columns)"
            )
        lowered = [name.lower() for name in names]
        if value.lower() not in lowered:
            raise UsageError(f"{flag} {value}: {path} names its columns {', '.join(names)}; pass one of them")
        return lowered.index(value.lower())
    if not -width <= value < width:
        raise UsageError(
            f"{flag} {value}: {path} has lines of {width} columns (0 to {width - 1}, or -{width} to -1); "
            "pass a column every line has"
        )
    return value + width if value < 0 and uniform else value


def find_layout(
    sentences: list[list[Row]], path: Path, token_column: str | int | None, tag_column: str | int | None,
    tag_scheme: str, names: list[str] | None = None,
) -> Layout:  # fmt: skip
    """The layout of one file's sentences (rows without '#' lines before sentences): read or refused."""
    rows = [row for sentence in sentences for row in sentence if not row.hash_line]
    if not rows:
        return Layout(token=0, tag=-1)
    widths = Counter(len(row.columns) for row in rows)
    width, uniform = min(widths), len(widths) == 1
    refs = list(range(width)) if uniform else [0, *range(-(width - 1), 0)]
    data = [kept for sentence in sentences if (kept := [row for row in sentence if not row.hash_line])]
    header_line = None
    if names is None and uniform and len(rows) > 1:
        names, header_line = header_names(data, refs, tag_scheme)
        if header_line is not None:
            data[0] = data[0][1:]
            data, rows = [sentence for sentence in data if sentence], rows[1:]
    layout = Layout(token=0, tag=refs[-1], header_line=header_line, names=names, width=width, uniform=uniform)
    widest = max(widths)  # a column some lines lack is refused at the first such line
    token = resolve(column_ref(token_column), "--token-column", names, widest, uniform, path) if token_column else None
    tag = resolve(column_ref(tag_column), "--tag-column", names, widest, uniform, path) if tag_column else None
    if token is not None and token == tag:
        raise UsageError(
            f"--token-column {token_column} and --tag-column {tag_column}: both name {layout.name(token)} of {path}; "
            "the words and the tags are two columns"
        )
    indexes = [ref for ref in refs if ref not in (token, tag) and is_index(data, ref)]
    layout.index = indexes[0] if indexes else None
    if layout.index is not None:
        layout.notes.append(f"{layout.name(layout.index)} counts the words (an index)")
    tagged = [ref for ref in refs if ref not in indexes and ref != token and tag_share(rows, ref, tag_scheme) > 0.5]
    layout.tag = tag if tag is not None else choose_tag_column(rows, tagged, layout, path)
    layout.token = token if token is not None else choose_token_column(rows, refs, indexes, tagged, layout, path)
    return layout


def tag_share(rows: Sequence[Row], ref: int, scheme: str) -> float:
    counts = Counter(values(rows, ref))  # few distinct values in a tag column: each checked once
    return sum(n for value, n in counts.items() if is_tag(value, scheme)) / len(rows)


def header_names(data: list[list[Row]], refs: list[int], scheme: str) -> tuple[list[str] | None, int | None]:
    """The first line as column names: it holds a known column name, and no tag (or count) where the other lines
    have their tags (or index)."""
    first, rest = data[0][0], [row for sentence in data for row in sentence][1:]
    if not rest or not any(value.strip().lower() in COLUMN_NAMES for value in first.columns):
        return None, None
    for ref in refs:
        if tag_share(rest, ref, scheme) > 0.5 and is_tag(first.columns[ref].strip(), scheme):
            return None, None
        if all(v.isdigit() for v in values(rest, ref)) and first.columns[ref].strip().isdigit():
            return None, None
    return [value.strip() for value in first.columns], first.number


def choose_tag_column(rows: Sequence[Row], tagged: list[int], layout: Layout, path: Path) -> int:
    """The one column of entity tags; chunk tags and a nested level set aside; otherwise refused."""
    if not tagged:
        return layout.tag  # the last column: its first bad value is refused with its line
    columns = {ref: values(rows, ref) for ref in tagged}
    if len(tagged) > 1:
        chunks = [ref for ref in tagged if CHUNK_TYPES >= {v[2:] for v in columns[ref] if v != "O"} != set()]
        if chunks and len(chunks) < len(tagged):
            kinds = ", ".join(sorted({v[2:] for ref in chunks for v in columns[ref] if v != "O"}))
            layout.notes.append(f"{', '.join(layout.name(r) for r in chunks)} holds chunk tags ({kinds}), not read")
            tagged = [ref for ref in tagged if ref not in chunks]
    distinct = list({tuple(columns[ref]): ref for ref in reversed(tagged)}.values())[::-1]
    if len(distinct) == 1:
        return distinct[0]
    outer = [
        ref for ref in distinct
        if all(entity_rows(columns[other]) <= entity_rows(columns[ref]) for other in distinct if other != ref)
    ]  # fmt: skip
    if len(outer) == 1:
        nested = [ref for ref in distinct if ref != outer[0]]
        inner = ", ".join(layout.name(ref) for ref in nested)
        if any(entity_rows(columns[ref]) for ref in nested):
            layout.notes.append(
                f"the entities of {inner} all lie inside those of {layout.name(outer[0])}: reading "
                f"{layout.name(outer[0])}, the outer level (--tag-column {nested[0]} reads the nested one)"
            )
        else:
            layout.notes.append(f"{inner} holds only O: reading {layout.name(outer[0])}")
        return outer[0]
    found = ", ".join(f"{layout.name(ref)} ({describe(columns[ref])})" for ref in distinct)
    flags = " or ".join(f"--tag-column {ref}" for ref in distinct)
    raise UsageError(
        f"{path}: {len(distinct)} columns hold tags: {found}{not_nested(rows, distinct, columns, layout)}; "
        f"pass {flags} (0-based) to say which holds the entities to train on"
    )


def not_nested(rows: Sequence[Row], refs: list[int], columns: dict, layout: Layout) -> str:
    """For two tag columns, the first line that keeps the sparser one from nesting in the other."""
    if len(refs) != 2:
        return ""
    inner, outer = sorted(refs, key=lambda ref: (len(entity_rows(columns[ref])), -ref))  # ties: the later inside
    for row, inside, around in zip(rows, columns[inner], columns[outer]):
        if inside != "O" and around == "O":
            return (
                f" (not nested: line {row.number} has {inside} in {layout.name(inner)} where "
                f"{layout.name(outer)} has O)"
            )
    return ""


def choose_token_column(
    rows: Sequence[Row], refs: list[int], indexes: list[int], tagged: list[int], layout: Layout, path: Path
) -> int:
    """The first column after the index that is neither an index nor tags, skipping one-valued columns."""
    candidates = [ref for ref in refs if ref not in indexes and ref not in tagged and ref != layout.tag]
    if layout.index is not None and layout.uniform:
        candidates = [ref for ref in candidates if ref > layout.index] or candidates
    varied = [ref for ref in candidates if len(rows) < 2 or len(set(values(rows, ref))) > 1]
    if not candidates:
        raise UsageError(
            f"{path}: no column holds the words (of its {layout.width} columns, "
            f"{', '.join(layout.name(r) for r in [*indexes, *tagged])} hold an index or tags); pass --token-column"
        )
    return (varied or candidates)[0]


def log_layout(path: Path, layout: Layout, skipped: dict[str, int]) -> None:
    """One line for a file that is not plain token<TAB>tag: which columns were read, what was skipped."""
    parts = []
    if layout.width > 2 or not layout.uniform:
        parts.append(f"words from {layout.name(layout.token)}, tags from {layout.name(layout.tag)}")
    if layout.header_line is not None:
        parts.append(f"line {layout.header_line} names the columns ({', '.join(layout.names or [])})")
    parts += layout.notes
    if skipped["comment"]:
        parts.append(f"{skipped['comment']} comment lines skipped")
    if skipped["extra"]:
        parts.append(f"{skipped['extra']} CoNLL-U multiword-token and empty-node lines skipped")
    if parts:
        columns = f"{layout.width} columns" if layout.uniform else f"{layout.width} or more columns"
        logger.info("%s: %s; %s", path, columns, "; ".join(parts))
