"""predict --format label-studio, doccano and spacy: pre-annotations out, checked by the tools' own code and read back
by ner_accel to the entities predict found.

spaCy's Doc.char_span, DocBin and offsets_to_biluo_tags run in every test run (spacy is in the dev extra). Label
Studio's converter and LabelInterface run where label-studio-sdk is installed (too heavy for the dev extra); what its
Converter made of these predictions is kept in tests/assets/label_studio/predicted_*, read back in every run, and
remade and compared where the SDK is there. doccano's code needs its Django server: its JSONL is checked against its
own export example (tests/assets/doccano/example.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import offsets_to_biluo_tags
from test_predict import build_gazetteer

from ner_accel.data.readers import read_split
from ner_accel.errors import UsageError
from ner_accel.inference.entities import extract_entities
from ner_accel.inference.export_formats import utf16_offset
from ner_accel.inference.words import split_words
from ner_accel.predict import main

ASSETS = Path(__file__).parent / "assets"
LS = ASSETS / "label_studio"
# Adjacent entities of one type (Berlin !), an emoji before an entity (doccano's UTF-16 offsets), a word with a
# hyphen, a final 's, a line break, double spaces, an empty text.
TEXTS = [
    "Angela Merkel besuchte Paris.",
    "Die Deutsche Bahn fährt nach  Berlin!",
    "🚄 Johann Bach lebte in Leipzig.",
    "Paris-Nord und Berlin, Bahn",
    "Merkel's Bahn\nnach Paris",
    "",
]


@pytest.fixture(scope="module")
def gazetteer(tmp_path_factory) -> Path:
    return build_gazetteer(tmp_path_factory.mktemp("gazetteer"))


@pytest.fixture(scope="module")
def predicted(gazetteer, tmp_path_factory) -> dict[str, Path]:
    """predict's output in each format for TEXTS (as JSON Lines input, an id kept)."""
    folder = tmp_path_factory.mktemp("predicted")
    source = folder / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)), "utf-8")
    outputs = {}
    for fmt, suffix in (("jsonl", ".jsonl"), ("label-studio", ".json"), ("doccano", ".jsonl"), ("spacy", ".jsonl")):
        outputs[fmt] = folder / f"{fmt}{suffix}"
        args = ["--model", str(gazetteer), "--input", str(source), "--output", str(outputs[fmt]), "--format", fmt]
        # argmax: tests/assets/label_studio holds label-studio-sdk's conversions of these argmax predictions
        assert main([*args, "--decode", "argmax"]) == 0
    return outputs


def expected_entities(predicted) -> list[list[tuple[str, int, int]]]:
    rows = [json.loads(line) for line in predicted["jsonl"].read_text("utf-8").splitlines()]
    return [[(e["type"], e["start"], e["end"]) for e in row["entities"]] for row in rows]


def entities_of(text: str, tokens: list[str], tags: list[str]) -> list[tuple[str, int, int]]:
    """Character spans of the entities of tokens found in order in text (any tool's tokens)."""
    offsets, position = [], 0
    for token in tokens:
        start = text.index(token, position)
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return [(kind, offsets[first][0], offsets[last - 1][1]) for kind, first, last in extract_entities(tags)]


def read_back(path: Path, texts: list[str]) -> list[list[tuple[str, int, int]]]:
    """ner_accel's reading of a file, as character spans in texts (empty texts have no sentence)."""
    sentences = iter(read_split(path))
    found = []
    for text in texts:
        if not split_words(text):
            found.append([])
            continue
        sentence = next(sentences)
        found.append(entities_of(text, sentence["tokens"], sentence["tags"]))
    assert next(sentences, None) is None
    return found


# ---------------------------------------------------------------------------------------------------------------
# The formats as written


def test_label_studio_tasks_carry_predictions_with_scores(predicted, gazetteer):
    tasks = json.loads(predicted["label-studio"].read_text("utf-8"))
    assert [task["data"] for task in tasks] == [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    first = tasks[0]["predictions"][0]
    assert first["model_version"] == gazetteer.name  # the model directory's (a run's: the run directory's) name
    assert [r["value"] for r in first["result"]] == [
        {"start": 0, "end": 13, "text": "Angela Merkel", "labels": ["PER"]},
        {"start": 23, "end": 28, "text": "Paris", "labels": ["LOC"]},
    ]
    assert {(r["from_name"], r["to_name"], r["type"]) for r in first["result"]} == {("label", "text", "labels")}
    scores = [r["score"] for r in first["result"]]
    assert all(0 < s <= 1 for s in scores) and first["score"] == pytest.approx(sum(scores) / 2)
    assert "score" not in tasks[-1]["predictions"][0] and tasks[-1]["predictions"][0]["result"] == []
    assert len({r["id"] for task in tasks for r in task["predictions"][0]["result"]}) == sum(
        len(task["predictions"][0]["result"]) for task in tasks
    )  # region ids unique in the file


def test_doccano_rows_have_doccanos_shape_and_utf16_offsets(predicted):
    example = [json.loads(line) for line in (ASSETS / "doccano" / "example.jsonl").read_text("utf-8").splitlines()]
    rows = [json.loads(line) for line in predicted["doccano"].read_text("utf-8").splitlines()]
    assert all(set(example[0]) <= set(row) for row in rows)  # text and label, as doccano exports them
    for row, entities in zip(rows, expected_entities(predicted)):
        assert all(isinstance(s, int) and isinstance(e, int) and isinstance(t, str) for s, e, t in row["label"])
        text = row["text"]
        units = [len(text[:i].encode("utf-16-le")) // 2 for _, i, _ in entities]  # JavaScript's string index
        assert [s for s, _, _ in row["label"]] == units == [utf16_offset(text, i) for _, i, _ in entities]
    assert rows[2]["label"][1] == [3, 14, "PER"]  # Johann Bach after the emoji: 2 in Python, 3 in doccano's editor


@pytest.mark.parametrize("fmt", ["label-studio", "doccano", "spacy"])
def test_each_format_reads_back_to_the_same_entities(fmt, predicted, tmp_path):
    path = predicted[fmt]
    if fmt == "label-studio":  # predictions are not annotations: read once an annotator submitted them
        path = tmp_path / "accepted.json"
        path.write_text(json.dumps(accepted(json.loads(predicted[fmt].read_text("utf-8")))), encoding="utf-8")
    assert read_back(path, TEXTS) == expected_entities(predicted)


def test_label_studio_predictions_alone_are_not_training_data(predicted):
    path = predicted["label-studio"]
    with pytest.raises(UsageError) as caught:
        read_split(path)
    assert str(caught.value) == (
        f"{path}: no task has an annotation (6 without an annotation; predictions are not annotations); annotate "
        "the tasks (or submit their predictions) and export again"
    )


def test_label_studio_tasks_on_standard_output(gazetteer, capsys):
    assert main(["--model", str(gazetteer), "--format", "label-studio", "Paris", "und"]) == 0
    tasks = json.loads(capsys.readouterr().out)
    assert [task["data"]["text"] for task in tasks] == ["Paris", "und"]
    assert [r["value"]["text"] for r in tasks[0]["predictions"][0]["result"]] == ["Paris"]


# ---------------------------------------------------------------------------------------------------------------
# spaCy's own code


def spacy_docs(path: Path):
    nlp = spacy.blank("xx")
    docs = []
    for row in (json.loads(line) for line in path.read_text("utf-8").splitlines()):
        doc = nlp.make_doc(row["text"])
        spans = [doc.char_span(s["start"], s["end"], label=s["label"]) for s in row["spans"]]
        assert None not in spans, row  # every entity on spaCy's token boundaries
        doc.ents = spans
        docs.append(doc)
    return nlp, docs


def test_spacy_docbin_round_trip(predicted, tmp_path):
    nlp, docs = spacy_docs(predicted["spacy"])
    back = list(DocBin(docs=docs).from_bytes(DocBin(docs=docs).to_bytes()).get_docs(nlp.vocab))
    path = tmp_path / "from_docbin.jsonl"
    rows = [{"text": d.text, "spans": [{"start": e.start_char, "end": e.end_char, "label": e.label_} for e in d.ents]}
            for d in back]  # fmt: skip
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_back(path, TEXTS) == expected_entities(predicted)


def test_spacy_biluo_tags_read_back_as_bilou(predicted, tmp_path):
    """spaCy's offsets_to_biluo_tags on our offsets, written as CoNLL, read by ner_accel's BILOU reader."""
    nlp, docs = spacy_docs(predicted["spacy"])
    blocks = []
    for doc in docs:
        tags = offsets_to_biluo_tags(doc, [(e.start_char, e.end_char, e.label_) for e in doc.ents])
        assert "-" not in tags
        words = [(t.text, tag) for t, tag in zip(doc, tags) if not t.is_space]
        if words:
            blocks.append("".join(f"{w}\t{tag}\n" for w, tag in words))
    path = tmp_path / "biluo.conll"
    path.write_text("\n".join(blocks), encoding="utf-8")
    assert read_back(path, TEXTS) == expected_entities(predicted)


# ---------------------------------------------------------------------------------------------------------------
# Label Studio's own code


def accepted(tasks: list[dict]) -> list[dict]:
    """The tasks as exported after an annotator submitted each prediction unchanged."""
    return [
        {"id": 100 + i, **task, "annotations": [{"id": i + 1, "completed_by": 1, "result": task["predictions"][0][
            "result"], "was_cancelled": False, "ground_truth": False, "created_at": "2024-05-02T09:00:00Z"}]}
        for i, task in enumerate(tasks)
    ]  # fmt: skip


def test_label_studio_converter_outputs_of_these_predictions_read_back(predicted, tmp_path):
    """predicted_export.json is what ner_accel wrote, accepted; predicted_min.json and predicted.conll what
    label-studio-sdk 2.1.2's Converter made of it (made again below where the SDK is installed)."""
    ours = accepted(json.loads(predicted["label-studio"].read_text("utf-8")))
    kept = json.loads((LS / "predicted_export.json").read_text("utf-8"))
    assert without_scores(ours) == without_scores(kept)  # the kept files still describe today's predictions
    expected = expected_entities(predicted)
    assert read_back(LS / "predicted_min.json", TEXTS) == expected
    conll = read_split(LS / "predicted.conll")  # the converter writes the empty text as an empty sentence
    assert [entities_of(t, s["tokens"], s["tags"]) for t, s in zip([t for t in TEXTS if t], conll)] == expected[:-1]


def without_scores(tasks: list[dict]) -> list[dict]:
    for task in tasks:
        for prediction in task["predictions"]:
            prediction.pop("score", None)
            prediction.pop("model_version", None)
            for region in prediction["result"]:
                region.pop("score", None)
        for annotation in task["annotations"]:
            for region in annotation["result"]:
                region.pop("score", None)
    return tasks


def test_label_studio_sdk_converts_and_validates_our_tasks(predicted, tmp_path):
    converter = pytest.importorskip("label_studio_sdk.converter", reason="label-studio-sdk is not installed")
    label_interface = pytest.importorskip("label_studio_sdk.label_interface")  # imported so: not in the dev extra

    config = (LS / "ner_config.xml").read_text("utf-8")
    tasks = json.loads(predicted["label-studio"].read_text("utf-8"))
    interface = label_interface.LabelInterface(config)
    assert [interface.validate_prediction(task["predictions"][0], return_errors=True) for task in tasks] == [[]] * 6
    source = tmp_path / "accepted.json"
    source.write_text(json.dumps(accepted(tasks), ensure_ascii=False, indent=1), encoding="utf-8")
    made = {}
    for fmt, name in (("JSON_MIN", "result.json"), ("CONLL2003", "result.conll")):
        folder = tmp_path / fmt
        converter.Converter(config=config, project_dir=None, download_resources=False).convert(
            str(source), str(folder), fmt, is_dir=False
        )
        made[fmt] = folder / name
    assert read_back(made["JSON_MIN"], TEXTS) == expected_entities(predicted)
    assert made["CONLL2003"].read_text("utf-8") == (LS / "predicted.conll").read_text("utf-8")
    assert json.loads(made["JSON_MIN"].read_text("utf-8")) == json.loads((LS / "predicted_min.json").read_text())
