"""predict's output formats: its own JSON Lines, and pre-annotations for annotation tools to import.

label-studio: a JSON array of Label Studio tasks, each with its data and one prediction (model_version, a score per
entity, the prediction's mean score), for a project whose labeling config has <Labels name="label" toName="text">
and <Text name="text" value="$text"/> (Label Studio's NER template; the data key is --text-field's). doccano: its
sequence-labeling JSONL, {"text", "label": [[start, end, type], ...]}. spacy: spaCy's and Prodigy's JSONL,
{"text", "spans": [{"start", "end", "label"}]}. Offsets are character offsets in the original text, counted as each
tool counts them: characters for Label Studio, spaCy and Prodigy; UTF-16 code units for doccano (its editor's count,
the same unless the text holds characters outside the BMP, such as emoji). Fields of an input JSON Lines row are
kept (in Label Studio's data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

EXPORT_FORMATS = ("jsonl", "label-studio", "doccano", "spacy")
LABEL_STUDIO_NAMES = {"from_name": "label", "to_name": "text"}  # Label Studio's NER template


def utf16_offset(text: str, index: int) -> int:
    """The UTF-16 code unit at which character `index` of text starts (doccano's offsets)."""
    return index + sum(1 for char in text[:index] if ord(char) > 0xFFFF)


def model_version(model: str) -> str:
    """The run's name (the folder holding model/), else the model directory's name."""
    path = Path(model).resolve()
    return path.parent.name if path.name == "model" else path.name


def label_studio_task(row: dict, field: str, entities: list[dict], version: str, number: int) -> dict:
    result = [
        {
            "id": f"ner_accel-{number}-{k}",
            **LABEL_STUDIO_NAMES,
            "type": "labels",
            "value": {"start": e["start"], "end": e["end"], "text": e["text"], "labels": [e["type"]]},
            "score": e["score"],
        }
        for k, e in enumerate(entities)
    ]
    prediction = {"model_version": version, "result": result}
    if entities:
        prediction["score"] = sum(e["score"] for e in entities) / len(entities)
    return {"data": dict(row), "predictions": [prediction]}


def record(fmt: str, row: dict, field: str, entities: list[dict], version: str, number: int) -> dict:
    """One document in the format: row is the input (its text under field), entities predict's."""
    if fmt == "label-studio":
        return label_studio_task(row, field, entities, version, number)
    if fmt == "jsonl":
        return {**row, "entities": entities}
    text, others = row[field], {key: value for key, value in row.items() if key != field}
    if fmt == "doccano":
        spans = [[utf16_offset(text, e["start"]), utf16_offset(text, e["end"]), e["type"]] for e in entities]
        return {**others, "text": text, "label": spans}
    return {
        **others,
        "text": text,
        "spans": [{"start": e["start"], "end": e["end"], "label": e["type"]} for e in entities],
    }


class EntityWriter:
    """Writes documents one by one in a format: JSON Lines, or for label-studio one JSON array (a task a line)."""

    def __init__(self, stream: TextIO, fmt: str, field: str, version: str) -> None:
        self.stream, self.fmt, self.field, self.version, self.count = stream, fmt, field, version, 0

    def write(self, row: dict, entities: list[dict]) -> None:
        line = json.dumps(record(self.fmt, row, self.field, entities, self.version, self.count), ensure_ascii=False)
        if self.fmt == "label-studio":
            line = ("[\n" if self.count == 0 else ",\n") + line
        else:
            line += "\n"
        self.stream.write(line)
        self.count += 1

    def close(self) -> None:
        if self.fmt == "label-studio":
            self.stream.write("[]\n" if self.count == 0 else "\n]\n")
