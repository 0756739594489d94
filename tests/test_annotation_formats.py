"""Annotation-tool exports as training and evaluation data: Label Studio JSON and JSON-MIN, doccano JSONL, spaCy and
Prodigy JSONL; spans aligned to predict's words, refused with file:line, offsets and text where they cannot be.

Fixtures (tests/assets, sources in its README.md): Label Studio's export.json is written in the layout of Label
Studio's JSON export; export_min.json and export.conll are what label-studio-sdk 2.1.2's own Converter made of it;
doccano/example.jsonl and relation_extraction.jsonl are doccano's own examples, copied."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import run_training

from ner_accel.data.readers import ReadOptions, read_split
from ner_accel.errors import UsageError

ASSETS = Path(__file__).parent / "assets"
LS_EXPORT, LS_MIN = ASSETS / "label_studio" / "export.json", ASSETS / "label_studio" / "export_min.json"
FIRST_ANNOTATIONS = [
    (["Angela", "Merkel", "besuchte", "Paris", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
    (["Die", "Deutsche", "Bahn", "fährt", "nach", "Berlin", "."], ["O", "B-ORG", "I-ORG", "O", "O", "B-LOC", "O"]),
    (["Johann", "Sebastian", "Bach", "lebte", "in", "Leipzig", "."], ["B-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["Siemens", "baut", "Züge", "in", "München", "🚄", "und", "Paris", "."],
     ["B-ORG", "O", "O", "O", "B-LOC", "O", "O", "B-LOC", "O"]),
]  # fmt: skip


def pairs(sentences: list[dict]) -> list[tuple[list[str], list[str]]]:
    return [(s["tokens"], s["tags"]) for s in sentences]


def refusal(path: Path, options: ReadOptions | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        read_split(path, options or ReadOptions())
    return str(caught.value)


def jsonl(path: Path, *rows: dict) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Label Studio


def test_label_studio_export_reads_each_tasks_first_annotation_not_cancelled(caplog):
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        sentences = read_split(LS_EXPORT)
    assert pairs(sentences) == FIRST_ANNOTATIONS  # task 101's cancelled annotation and task 105 (predictions) not
    assert [s["line"] for s in sentences] == [2, 116, 245, 366]  # where each task starts
    assert caplog.messages == [
        f"{LS_EXPORT}: 4 texts with 9 entities read as IOB2 (Label Studio tasks); 1 tasks annotated more than once: "
        "the first annotation read (--annotator); 1 tasks without an annotation skipped"
    ]


def test_label_studio_annotator_picks_one_users_annotations():
    sentences = read_split(LS_EXPORT, ReadOptions(annotator="2"))
    assert pairs(sentences)[0] == (FIRST_ANNOTATIONS[1][0], ["O", "O", "B-ORG", "O", "O", "B-LOC", "O"])
    assert len(sentences) == 2
    assert refusal(LS_EXPORT, ReadOptions(annotator="7")) == (
        f"--annotator 7: {LS_EXPORT} has no annotation of theirs (annotators: 1, 2); pass one of them"
    )


def test_label_studio_json_min_reads_the_same_annotations():
    """JSON-MIN holds one row per annotation, newest first: the earliest of a task's rows is the one read."""
    assert pairs(read_split(LS_MIN)) == FIRST_ANNOTATIONS
    assert pairs(read_split(LS_MIN, ReadOptions(annotator="2"))) == pairs(
        read_split(LS_EXPORT, ReadOptions(annotator="2"))
    )


def test_label_studio_conll_export_of_its_converter_reads_as_it_is(caplog):
    """What the converter writes (token -X- _ tag, a sentence per annotation, unannotated tasks all O)."""
    sentences = read_split(ASSETS / "label_studio" / "export.conll")
    assert len(sentences) == 6 and sentences[5]["tags"] == ["O"] * 6  # task 105 had no annotation: O everywhere
    assert pairs(sentences)[2] == FIRST_ANNOTATIONS[1]


@pytest.mark.parametrize(
    "result, expected",
    [
        ({"value": {"start": 0, "end": 3, "text": "Ang", "labels": ["PER"]}},
         "span [0, 3) PER 'Ang' does not fall on word boundaries: it cuts the word 'Angela'; fix the span, or pass "
         "--snap-spans to extend it to whole words"),
        ({"value": {"start": 23, "end": 40, "text": "Paris.", "labels": ["LOC"]}},
         "span [23, 40) LOC lies outside the text (the text has 29 characters); fix its offsets or remove it"),
        ({"value": {"start": 7, "end": 13, "text": "Merkel", "labels": ["PER", "LOC"]}},
         "span [7, 13) 'Merkel' has labels ['PER', 'LOC']; give each span exactly one label"),
        ({"value": {"start": 0, "end": 6, "text": "Merkel", "labels": ["PER"]}},
         "span [0, 6) PER 'Angela': the export's own copy of its text is 'Merkel', not the text at those offsets; the "
         "offsets do not fit this text (fix start and end, or export again)"),
        ({"value": {"start": 6, "end": 7, "text": " ", "labels": ["PER"]}},
         "span [6, 7) PER ' ' covers no word (only spaces or invisible characters); remove it"),
        ({"type": "hypertextlabels", "value": {"start": "/p[1]", "end": "/p[1]", "hypertextlabels": ["PER"]}},
         "a hypertextlabels region (offsets into HTML or dialogue, not one plain text); label the text with <Text> "
         "and <Labels>"),
    ],
)  # fmt: skip
def test_label_studio_spans_that_do_not_fit_are_refused(result, expected, tmp_path):
    region = {"id": "x", "from_name": "label", "to_name": "text", "type": "labels", **result}
    task = {"id": 7, "data": {"text": "Angela Merkel besuchte Paris."}, "annotations": [{"id": 1, "result": [region]}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps([task], indent=1), encoding="utf-8")
    assert refusal(path) == f"{path}:2 (task 7): {expected}"


def test_label_studio_task_without_a_text_field_is_refused(tmp_path):
    path = tmp_path / "train.json"
    task = {"id": 3, "data": {"title": "a", "body": "b"}, "annotations": [{"result": []}]}
    path.write_text(json.dumps([task]), encoding="utf-8")
    assert refusal(path) == (
        f'{path}:1 (task 3): the task\'s data has several (title, body) text fields and no "text"; keep the text in '
        '"text"'
    )


# ---------------------------------------------------------------------------------------------------------------
# doccano


def test_doccanos_own_examples_read():
    assert pairs(read_split(ASSETS / "doccano" / "example.jsonl")) == [
        (["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
         ["B-ORG", "O", "B-MISC", "O", "O", "O", "O", "O", "O"]),
        (["Peter", "Blackburn"], ["B-PERSON", "I-PERSON"]),
        (["President", "Obama"], ["O", "B-PERSON"]),
    ]  # fmt: skip
    (relations,) = read_split(ASSETS / "doccano" / "relation_extraction.jsonl")
    assert relations["tags"][4:8] == ["B-DATE", "I-DATE", "I-DATE", "I-DATE"]  # September 4 , 1998


def test_doccano_offsets_count_utf16_code_units_as_its_editor():
    """'🚄 Siemens': doccano's editor puts Siemens at 3 (the emoji is two UTF-16 units), Python at 2."""
    rows = read_split(ASSETS / "doccano" / "export_de.jsonl")
    assert pairs(rows)[2] == (["🚄", "Siemens", "baut", "Züge", "in", "München", "."],
                              ["O", "B-ORG", "O", "O", "O", "B-LOC", "O"])  # fmt: skip


def test_doccano_refusals_name_the_line_and_span(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", {"text": "Paris", "label": [[0, 5, "LOC"]]},
                 {"text": "🚄 Siemens baut", "label": [[1, 10, "ORG"]]})  # fmt: skip
    assert refusal(path) == (
        f"{path}:2: span [1, 10) ORG splits a character outside the BMP (an emoji) (doccano counts offsets in UTF-16 "
        "code units, as its editor; here converted to characters); fix its offsets"
    )
    path = jsonl(tmp_path / "cats.jsonl", {"text": "good film", "label": ["positive"]})
    assert refusal(path) == (
        f"{path}:1: \"label\" holds categories (['positive']), not spans [start, end, type]; export the "
        "sequence-labeling project"
    )


# ---------------------------------------------------------------------------------------------------------------
# spaCy and Prodigy


def test_prodigy_reads_accepted_answers_only(caplog):
    path = ASSETS / "prodigy" / "ner_manual.jsonl"
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        sentences = read_split(path)
    assert [s["tokens"][0] for s in sentences] == ["Angela", "Die", "Johann"]
    assert [s["line"] for s in sentences] == [1, 2, 4]
    assert caplog.messages == [
        f"{path}: 3 texts with 6 entities read as IOB2 (spaCy/Prodigy rows); 1 rows answered reject skipped; 1 rows "
        "answered ignore skipped"
    ]


def test_prodigy_binary_annotations_are_refused(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", {"text": "Paris", "spans": [{"start": 0, "end": 5, "label": "LOC"}],
                                             "_view_id": "ner", "answer": "accept"})  # fmt: skip
    assert refusal(path) == (
        f"{path}:1: a Prodigy binary annotation (ner.teach: one span accepted or rejected, the other entities unknown); "
        "train from a manual dataset (ner.manual, ner.correct)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Span rules, the same for every tool


TEXT = "Die Deutsche Bahn fährt nach Paris-Nord."


def spans_file(tmp_path: Path, *spans: tuple[int, int, str]) -> Path:
    return jsonl(
        tmp_path / "train.jsonl", {"text": TEXT, "spans": [{"start": s, "end": e, "label": t} for s, e, t in spans]}
    )


def test_overlapping_spans_are_refused(tmp_path):
    path = spans_file(tmp_path, (4, 17, "ORG"), (13, 23, "MISC"))
    assert refusal(path) == (
        f"{path}:1: spans [4, 17) ORG 'Deutsche Bahn' and [13, 23) MISC 'Bahn fährt' overlap; IOB tags give each "
        "word one entity: fix or remove one"
    )
    path = spans_file(tmp_path, (4, 17, "ORG"), (4, 17, "LOC"))
    assert "overlap" in refusal(path)


def test_nested_spans_are_refused_with_the_flag_or_one_level_kept(tmp_path, caplog):
    path = spans_file(tmp_path, (4, 17, "ORG"), (4, 12, "LOC"))
    assert refusal(path) == (
        f"{path}:1: span [4, 12) LOC 'Deutsche' lies inside [4, 17) ORG 'Deutsche Bahn' (nested entities); IOB tags "
        "hold one level: pass --nested-spans outer or --nested-spans inner to keep one"
    )
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        (outer,) = read_split(path, ReadOptions(nested_spans="outer"))
    assert outer["tags"][:3] == ["O", "B-ORG", "I-ORG"]
    assert caplog.messages[-1].endswith("1 nested spans dropped (--nested-spans)")
    (inner,) = read_split(path, ReadOptions(nested_spans="inner"))
    assert inner["tags"][:3] == ["O", "B-LOC", "O"]


def test_snap_spans_extends_cut_words_and_counts_them(tmp_path, caplog):
    path = spans_file(tmp_path, (5, 17, "ORG"), (29, 34, "LOC"))  # "eutsche Bahn", "Paris" of Paris-Nord
    message = refusal(path)
    assert message.startswith(f"{path}:1: span [5, 17) ORG 'eutsche Bahn' does not fall on word boundaries: it cuts "
                              "the word 'Deutsche'")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        (sentence,) = read_split(path, ReadOptions(snap_spans=True))
    assert list(zip(sentence["tokens"], sentence["tags"])) == [
        ("Die", "O"), ("Deutsche", "B-ORG"), ("Bahn", "I-ORG"), ("fährt", "O"), ("nach", "O"),
        ("Paris-Nord", "B-LOC"), (".", "O"),
    ]  # fmt: skip
    assert caplog.messages[-1].endswith(
        f"2 spans snapped to whole words (--snap-spans; first {path}:1: [5, 17) ORG 'eutsche Bahn' -> [4, 17) "
        "'Deutsche Bahn')"
    )


def test_spaces_at_a_spans_edges_and_a_span_marked_twice_are_fine(tmp_path):
    path = spans_file(tmp_path, (3, 18, "ORG"), (4, 17, "ORG"))  # " Deutsche Bahn " and the same again
    assert read_split(path)[0]["tags"][:4] == ["O", "B-ORG", "I-ORG", "O"]


def test_a_file_mixing_formats_is_refused(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", {"text": "Paris", "label": [[0, 5, "LOC"]]},
                 {"text": "Rom", "spans": [{"start": 0, "end": 3, "label": "LOC"}]})  # fmt: skip
    assert refusal(path) == (
        f"{path}:2: a spaCy/Prodigy row in a file whose line 1 is a doccano row; keep one format per file"
    )
    path = jsonl(tmp_path / "plain.jsonl", {"text": "Paris liegt", "meta": {}})
    assert refusal(path).startswith(f'{path}:1: a row with a "text" but no spans (keys: text, meta)')


# ---------------------------------------------------------------------------------------------------------------
# End to end: each format trains and evaluates


FORMATS = {
    "label-studio": (LS_EXPORT, LS_EXPORT, ".json"),
    "label-studio-min": (LS_MIN, LS_MIN, ".json"),
    "doccano": (ASSETS / "doccano" / "export_de.jsonl", ASSETS / "doccano" / "export_de.jsonl", ".jsonl"),
    "prodigy": (ASSETS / "prodigy" / "ner_manual.jsonl", ASSETS / "prodigy" / "ner_manual.jsonl", ".jsonl"),
    "spacy": (ASSETS / "spacy" / "spans.jsonl", ASSETS / "spacy" / "spans.jsonl", ".jsonl"),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_trains_and_evaluates(name, tiny_model, tmp_path):
    from ner_accel import evaluate

    train, validation, suffix = FORMATS[name]
    data = tmp_path / name
    data.mkdir()
    shutil.copy(train, data / f"train{suffix}")
    shutil.copy(validation, data / f"validation{suffix}")
    out = tmp_path / "out"
    args = [
        "--model",
        tiny_model,
        "--data-dir",
        data,
        "--output-dir",
        out,
        "--run-name",
        "r",
        "--num-train-epochs",
        "1",
    ]
    assert run_training(args) == 0
    assert json.loads((out / "r" / "train_config.json").read_text())["labels"] == [
        "O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"
    ]  # fmt: skip
    report = tmp_path / "eval.json"
    assert evaluate.main(["--model", str(out / "r"), "--data-dir", str(data), "--output", str(report)]) == 0
    expected = {"label-studio": 4, "label-studio-min": 4, "doccano": 4, "prodigy": 3, "spacy": 4}[name]
    assert json.loads(report.read_text())["models"][0]["results"][name]["sentences"] == expected


def test_spacy_training_pairs_read(tmp_path):
    """spaCy's (text, {"entities": [(start, end, label)]}) pairs, as JSON arrays a line."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(["Who is Shaka Khan?", {"entities": [[7, 17, "PERSON"]]}]) + "\n", encoding="utf-8")
    assert pairs(read_split(path)) == [(["Who", "is", "Shaka", "Khan", "?"], ["O", "O", "B-PERSON", "I-PERSON", "O"])]


def test_json_lines_tokens_without_their_tags_name_the_flag(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", {"tokens": ["Paris"], "labels": ["B-LOC"]})
    assert refusal(path) == (
        f'{path}:1: no "ner_tags" list beside "tokens"; it has labels: pass --tag-column with the tags\' field'
    )
    assert pairs(read_split(path, ReadOptions(tag_column="labels"))) == [(["Paris"], ["B-LOC"])]


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("train.json", [{"id": 1, "data": {"text": "Paris"}, "annotations": [{"result": [
            {"type": "labels", "to_name": "text", "value": {"start": "/p[1]", "end": 3, "labels": ["LOC"]}}]}]}],
         ":1 (task 1): span ('/p[1]', 3) 'LOC': start and end must be whole numbers (character offsets); fix the span"),
        ("train.json", [{"id": 1, "data": {"text": "Paris"}, "annotations": [{"result": [
            {"type": "labels", "to_name": "text", "value": {"start": 0, "end": 5, "labels": [" LOC"]}}]}]}],
         ":1 (task 1): span [0, 5): label ' LOC' is not an entity type (a non-empty string without spaces at its "
         "ends or invisible characters); fix the label"),
        ("train.json", [{"id": 1, "data": {"text": "Paris", "title": "P"}, "annotations": [{"result": [
            {"type": "labels", "to_name": "text", "value": {"start": 0, "end": 5, "labels": ["LOC"]}},
            {"type": "labels", "to_name": "title", "value": {"start": 0, "end": 1, "labels": ["LOC"]}}]}]}],
         ":1 (task 1): spans on several texts (text, title); ner_accel reads one text per task: export a project "
         "with one <Text>"),
        ("train.jsonl", {"text": "Paris", "label": [[0, 5]]},
         ':1: "label" item [0, 5] is not [start, end, type] or {"start_offset": ..., "end_offset": ..., "label": ...}'),
        ("train.jsonl", {"text": "Paris", "label": "LOC"},
         ":1: \"label\" must be a list of [start, end, type] spans, found 'LOC'"),
        ("train.jsonl", {"text": "Paris", "label": [[3, 3, "LOC"]]},
         ":1: span [3, 3) LOC is empty (its end is not after its start) (the text has 5 characters); fix its offsets "
         "or remove it"),
        ("train.jsonl", {"text": 5, "spans": []}, ':1: a row with "spans" needs its "text" string'),
        ("train.jsonl", {"text": "Paris", "spans": [{"start": 0}]},
         ':1: span {\'start\': 0} is not {"start": ..., "end": ..., "label": ...}'),
        ("train.jsonl", ["Paris", {"entities": [[0, 5]]}],
         ":1: expected [text, {\"entities\": [[start, end, label], ...]}], found {'entities': [[0, 5]]}"),
    ],
)  # fmt: skip
def test_malformed_rows_are_refused(name, content, expected, tmp_path):
    path = tmp_path / name
    path.write_text(json.dumps(content) + "\n", encoding="utf-8")
    assert refusal(path) == f"{path}{expected}"


def test_a_json_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[\n  {"id": 1,\n   "data": {"text": "Paris"}\n   "annotations": []}\n]\n', encoding="utf-8")
    assert refusal(path) == (
        f"{path}:4: not valid JSON (Expecting ',' delimiter); a .json file holds one JSON array of objects"
    )
