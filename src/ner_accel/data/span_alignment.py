"""Character spans of an annotation tool, aligned to the words predict splits text into, as IOB2 tags.

The words are ner_accel.inference.words.split_words', so an entity that predict writes, exported and read back,
covers the same words. A span must cover whole words (spaces at its edges are fine); one that cuts a word, overlaps
another, lies outside the text or covers no word is refused with its place, offsets and text; --snap-spans extends a
cut word's span to the whole word (counted), --nested-spans outer|inner keeps one level of nested spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..inference.words import split_words

if TYPE_CHECKING:
    from .readers import ReadOptions


@dataclass(frozen=True)
class Span:
    """[start, end) in characters of the document's text, with its entity type; text: the tool's own copy of the
    span's text, where it keeps one (Label Studio, Prodigy), checked against the offsets."""

    start: int
    end: int
    label: str
    text: str | None = None


@dataclass
class Document:
    """One annotated text; where: its file:line (and the tool's id), named in every message."""

    text: str
    spans: list[Span]
    where: str
    line: int
    note: str = ""  # added to span messages (how the tool counted offsets, where that matters)


@dataclass
class AlignCounts:
    """What reading changed, for the file's log line."""

    snapped: int = 0
    first_snap: str = ""
    duplicates: int = 0
    nested_dropped: int = 0
    entities: int = 0


def show(text: str, span: Span) -> str:
    return f"[{span.start}, {span.end}) {span.label} {text[span.start : span.end]!r}"


def check_span(document: Document, span: Span) -> None:
    """Offsets within the text, a usable type, and the tool's copy of the text matching the offsets."""
    where, text = document.where, document.text
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (span.start, span.end)):
        raise UsageError(
            f"{where}: span ({span.start!r}, {span.end!r}) {span.label!r}: start and end must be whole numbers "
            "(character offsets); fix the span"
        )
    label = span.label
    if not isinstance(label, str) or not label or label != label.strip() or not label.isprintable():
        raise UsageError(
            f"{where}: span [{span.start}, {span.end}): label {label!r} is not an entity type (a non-empty "
            "string without spaces at its ends or invisible characters); fix the label"
        )
    if not 0 <= span.start < span.end <= len(text):
        problem = "is empty (its end is not after its start)" if span.start >= span.end else "lies outside the text"
        raise UsageError(
            f"{where}: span [{span.start}, {span.end}) {label} {problem} (the text has {len(text)} characters); "
            f"fix its offsets or remove it{document.note}"
        )
    if span.text is not None and "".join(span.text.split()) != "".join(text[span.start : span.end].split()):
        raise UsageError(
            f"{where}: span {show(text, span)}: the export's own copy of its text is {span.text!r}, not the text at "
            f"those offsets; the offsets do not fit this text (fix start and end, or export again){document.note}"
        )


def word_range(document: Document, words: list[tuple[int, int]], span: Span, snap: bool, counts: AlignCounts):
    """(first word, last word + 1) the span covers; a cut word is refused, or taken whole under --snap-spans."""
    covered = [i for i, (start, end) in enumerate(words) if start < span.end and end > span.start]
    text, where = document.text, document.where
    if not covered:
        raise UsageError(
            f"{where}: span {show(text, span)} covers no word (only spaces or invisible characters); remove it"
            f"{document.note}"
        )
    first, last = covered[0], covered[-1]
    if words[first][0] < span.start or words[last][1] > span.end:
        cut = first if words[first][0] < span.start else last
        if not snap:
            raise UsageError(
                f"{where}: span {show(text, span)} does not fall on word boundaries: it cuts the word "
                f"{text[words[cut][0] : words[cut][1]]!r}; fix the span, or pass --snap-spans to extend it to whole "
                f"words{document.note}"
            )
        counts.snapped += 1
        if not counts.first_snap:
            whole = text[words[first][0] : words[last][1]]
            counts.first_snap = f"{where}: {show(text, span)} -> [{words[first][0]}, {words[last][1]}) {whole!r}"
    return first, last + 1


@dataclass
class Placed:
    first: int
    last: int  # one past the last word
    span: Span


def resolve_nesting(document: Document, placed: list[Placed], nested: str, counts: AlignCounts) -> list[Placed]:
    """Refuse crossing spans; nested ones refused or one level kept (--nested-spans outer|inner)."""
    placed.sort(key=lambda p: (p.first, -p.last))
    open_spans: list[Placed] = []
    containers: set[int] = set()
    contained: set[int] = set()
    for index, current in enumerate(placed):
        open_spans = [other for other in open_spans if placed[other].last > current.first]
        for other in open_spans:
            around = placed[other]
            same_words = (around.first, around.last) == (current.first, current.last)
            if current.last > around.last or same_words:
                raise UsageError(
                    f"{document.where}: spans {show(document.text, around.span)} and {show(document.text, current.span)}"
                    " overlap; IOB tags give each word one entity: fix or remove one"
                )
            if nested == "refuse":
                raise UsageError(
                    f"{document.where}: span {show(document.text, current.span)} lies inside "
                    f"{show(document.text, around.span)} (nested entities); IOB tags hold one level: pass "
                    "--nested-spans outer or --nested-spans inner to keep one"
                )
            containers.add(other)
            contained.add(index)
        open_spans.append(index)
    dropped = contained if nested == "outer" else containers
    counts.nested_dropped += len(dropped)
    return [p for i, p in enumerate(placed) if i not in dropped]


def words_and_tags(document: Document, options: ReadOptions, counts: AlignCounts) -> tuple[list[str], list[str]]:
    """The document's words (split_words) and their IOB2 tags."""
    words = split_words(document.text)
    placed, seen = [], set()
    for span in document.spans:
        check_span(document, span)
        first, last = word_range(document, words, span, options.snap_spans, counts)
        if (first, last, span.label) in seen:
            counts.duplicates += 1  # the same entity marked twice (a double click): one entity
            continue
        seen.add((first, last, span.label))
        placed.append(Placed(first, last, span))
    tags = ["O"] * len(words)
    for entity in resolve_nesting(document, placed, options.nested_spans, counts):
        tags[entity.first : entity.last] = [f"B-{entity.span.label}"] + [f"I-{entity.span.label}"] * (
            entity.last - entity.first - 1
        )
        counts.entities += 1
    return [document.text[start:end] for start, end in words], tags
