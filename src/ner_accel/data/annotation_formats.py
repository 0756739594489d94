"""Annotation tools' exports as training and evaluation data: Label Studio (JSON, JSON-MIN), doccano (JSONL) and
spaCy / Prodigy (JSONL with spans). A file's rows are told apart by their keys, never by its name.

Label Studio's offsets count characters (as Python does) and its regions keep their text, which is checked; doccano's
count UTF-16 code units, as its web editor does (the same as characters unless the text has characters outside the
BMP, such as emoji), and are converted; spaCy's and Prodigy's count characters.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from .label_studio import AnnotationChoice, is_regions, label_studio_documents, label_studio_min_documents
from .lines import not_utf8, numbered_lines
from .span_alignment import AlignCounts, Document, Span, words_and_tags

if TYPE_CHECKING:
    from .readers import ReadOptions

logger = logging.getLogger(__name__)

SHAPES = {
    "tokens": "tokens/ner_tags row",
    "label-studio": "Label Studio task",
    "label-studio-min": "Label Studio JSON-MIN row",
    "doccano": "doccano row",
    "spacy": "spaCy/Prodigy row",
}
DOCCANO_KEYS = ("label", "labels", "entities")  # sequence labeling: label; with relations or intents: entities


# ---------------------------------------------------------------------------------------------------------------
# JSON and JSON Lines with line numbers


def json_rows(path: Path) -> list[tuple[int, object]]:
    """(line, value) of each row: a .json file's array items (or its one object), or the lines of JSON Lines (blank
    lines skipped; also a .json file of several objects a line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise not_utf8(path, error) from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        return array_items(path, text)
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            pass  # more than one value: JSON Lines under a .json name
        else:
            return [(text[: len(text) - len(text.lstrip())].count("\n") + 1, value)]
    rows = []
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}:{number}: not valid JSON ({error.msg}); write one JSON object per line") from None
    return rows


def array_items(path: Path, text: str) -> list[tuple[int, object]]:
    """The items of a JSON array, each with the line it starts on."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg}); a .json file holds one JSON array of objects"
        ) from None
    decoder, items = json.JSONDecoder(), []
    position, line, counted = text.index("[") + 1, 1, 0
    while True:
        while text[position] in " \t\r\n,":
            position += 1
        if text[position] == "]":
            return items
        line += text.count("\n", counted, position)
        counted = position
        value, position = decoder.raw_decode(text, position)
        items.append((line, value))


def row_shape(row: object, where: str) -> str:
    """Which format a row is in, by its keys (one of SHAPES)."""
    if isinstance(row, list) and len(row) == 2 and isinstance(row[0], str) and isinstance(row[1], dict):
        return "spacy"  # spaCy's (text, {"entities": [(start, end, label)]}) training pair
    if not isinstance(row, dict):
        return "tokens"  # refused by the token reader, with its message
    if isinstance(row.get("data"), dict) and any(k in row for k in ("annotations", "completions", "predictions")):
        return "label-studio"
    if isinstance(row.get("spans"), list):
        return "spacy"
    text = row.get("text")
    if isinstance(text, str) and ("annotation_id" in row or any(is_regions(value) for value in row.values())):
        return "label-studio-min"
    if isinstance(text, str) and any(key in row for key in DOCCANO_KEYS):
        return "doccano"
    if isinstance(text, str) and "tokens" not in row:
        raise UsageError(
            f'{where}: a row with a "text" but no spans (keys: {", ".join(map(str, row))}); expected "label" or '
            '"entities" (doccano), "spans" (spaCy, Prodigy), a Label Studio export, or "tokens" with "ner_tags"'
        )
    return "tokens"


# ---------------------------------------------------------------------------------------------------------------
# One document per row (or task)


def doccano_offsets(text: str) -> dict[int, int] | None:
    """UTF-16 code unit -> character, where the text has characters outside the BMP (else None: the same)."""
    if all(ord(char) <= 0xFFFF for char in text):
        return None
    positions, unit = {}, 0
    for index, char in enumerate(text):
        positions[unit] = index
        unit += 2 if ord(char) > 0xFFFF else 1
    positions[unit] = len(text)
    return positions


def doccano_document(row: dict, where: str, line: int) -> Document:
    """{"text", "label": [[start, end, type], ...]} or "entities" as such lists or {"start_offset", ...} objects."""
    key = next(key for key in DOCCANO_KEYS if key in row)
    text, items = row["text"], row[key]
    if not isinstance(items, list):
        raise UsageError(f'{where}: "{key}" must be a list of [start, end, type] spans, found {items!r}')
    positions = doccano_offsets(text)
    note = " (doccano counts offsets in UTF-16 code units, as its editor; here converted to characters)"
    spans = []
    for item in items:
        if isinstance(item, str):
            raise UsageError(
                f'{where}: "{key}" holds categories ({items[:3]!r}), not spans [start, end, type]; export the '
                "sequence-labeling project"
            )
        if isinstance(item, dict) and {"start_offset", "end_offset", "label"} <= item.keys():
            start, end, label = item["start_offset"], item["end_offset"], item["label"]
        elif isinstance(item, (list, tuple)) and len(item) == 3:
            start, end, label = item
        else:
            raise UsageError(
                f'{where}: "{key}" item {item!r} is not [start, end, type] or '
                '{"start_offset": ..., "end_offset": ..., "label": ...}'
            )
        if positions is not None and isinstance(start, int) and isinstance(end, int):
            if start in positions and end in positions:
                start, end = positions[start], positions[end]
            elif max(start, end) < max(positions):
                raise UsageError(
                    f"{where}: span [{start}, {end}) {label} splits a character outside the BMP (an emoji){note}; "
                    "fix its offsets"
                )
        spans.append(Span(start, end, label))
    return Document(text, spans, where, line, note if positions is not None else "")


def spacy_document(row: dict | list, where: str, line: int) -> Document | None:
    """{"text", "spans": [{"start", "end", "label"}]}, or spaCy's [text, {"entities": [[start, end, label]]}];
    Prodigy's rows only when answered accept (None otherwise)."""
    if isinstance(row, list):
        text, entities = row[0], row[1].get("entities")
        if not isinstance(entities, list) or not all(isinstance(e, list) and len(e) == 3 for e in entities):
            raise UsageError(f'{where}: expected [text, {{"entities": [[start, end, label], ...]}}], found {row[1]!r}')
        return Document(text, [Span(*entity) for entity in entities], where, line)
    if row.get("_view_id") == "ner":
        raise UsageError(
            f"{where}: a Prodigy binary annotation (ner.teach: one span accepted or rejected, the other entities "
            "unknown); train from a manual dataset (ner.manual, ner.correct)"
        )
    if row.get("answer", "accept") != "accept":
        return None
    if not isinstance(row.get("text"), str):
        raise UsageError(f'{where}: a row with "spans" needs its "text" string')
    spans = []
    for item in row["spans"]:
        if not isinstance(item, dict) or not {"start", "end", "label"} <= item.keys():
            raise UsageError(f'{where}: span {item!r} is not {{"start": ..., "end": ..., "label": ...}}')
        spans.append(Span(item["start"], item["end"], item["label"], item.get("text")))
    return Document(row["text"], spans, where, line)


# ---------------------------------------------------------------------------------------------------------------
# The file


def read_annotations(path: Path, rows: list[tuple[int, object]], shape: str, options: ReadOptions) -> list[dict]:
    """Sentences (the words of each text and their IOB2 tags) of an annotation tool's file; one log line."""
    choice, skipped = AnnotationChoice(options.annotator), Counter()
    if shape == "label-studio":
        documents = label_studio_documents(path, rows, choice)
        choice.check(path)
    elif shape == "label-studio-min":
        documents = label_studio_min_documents(path, rows, choice)
        choice.check(path)
    else:
        documents = []
        for line, row in rows:
            where = f"{path}:{line}"
            document = doccano_document(row, where, line) if shape == "doccano" else spacy_document(row, where, line)
            if document is None:
                skipped[f"answered {row.get('answer')}"] += 1
            else:
                documents.append(document)
    counts, sentences = AlignCounts(), []
    for document in documents:
        tokens, tags = words_and_tags(document, options, counts)
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "line": document.line})
        else:
            skipped["with an empty text"] += 1
    if not sentences and choice.skipped:
        raise UsageError(
            f"{path}: no task has an annotation ({', '.join(f'{n} {why}' for why, n in choice.skipped.items())}; "
            "predictions are not annotations); annotate the tasks (or submit their predictions) and export again"
        )
    log_file(path, shape, len(sentences), counts, choice, skipped)
    return sentences


def log_file(path: Path, shape: str, read: int, counts: AlignCounts, choice: AnnotationChoice, skipped: Counter):
    parts = [f"{read} texts with {counts.entities} entities read as IOB2 ({SHAPES[shape]}s)", *choice.notes()]
    parts += [f"{n} rows {why} skipped" for why, n in skipped.items()]
    if counts.duplicates:
        parts.append(f"{counts.duplicates} spans marked twice read once")
    if counts.nested_dropped:
        parts.append(f"{counts.nested_dropped} nested spans dropped (--nested-spans)")
    if counts.snapped:
        parts.append(f"{counts.snapped} spans snapped to whole words (--snap-spans; first {counts.first_snap})")
    logger.info("%s: %s", path, "; ".join(parts))
