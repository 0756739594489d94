"""ner_accel.predict: word splitting, windows, entity grouping, the tagger end to end, pipeline parity, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MINILM, PANX, build_tokenizer, needs_shared
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    pipeline,
)

from ner_accel.data.readers import read_conll
from ner_accel.inference.entities import extract_entities
from ner_accel.inference.tagger import Tagger
from ner_accel.inference.windows import central_windows, plan_windows
from ner_accel.inference.words import inside_word, split_words
from ner_accel.predict import main

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
# First sub-token -> tag. "##kel" (Merkel's second piece) says B-LOC: only first sub-tokens may count.
GAZETTEER = {
    "ang": "B-PER", "mer": "I-PER", "##kel": "B-LOC", "joh": "B-PER", "bach": "I-PER", "paris": "B-LOC",
    "ber": "B-LOC", "deu": "B-ORG", "bahn": "I-ORG", "[UNK]": "B-LOC",
}  # fmt: skip


def build_gazetteer(path):
    """A real BERT token classifier whose tag depends on the sub-token alone (no layers, no positions).

    Its answers do not depend on context, so a text cut into windows must give exactly the entities of the
    whole text; the embedding of each token points at its tag and LayerNorm scales it to a logit of 4.
    """
    tokenizer = build_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=0, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )  # fmt: skip
    model = BertForTokenClassification(config)
    with torch.no_grad():
        embeddings = model.bert.embeddings
        for weight in (embeddings.position_embeddings.weight, embeddings.token_type_embeddings.weight):
            weight.zero_()
        embeddings.word_embeddings.weight.zero_()
        for token, index in tokenizer.get_vocab().items():
            label = LABELS.index(GAZETTEER.get(token, "O"))
            embeddings.word_embeddings.weight[index, label] = 1.0
            embeddings.word_embeddings.weight[index, label + len(LABELS)] = -1.0
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[range(len(LABELS)), range(len(LABELS))] = 1.0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gazetteer(tmp_path_factory):
    return build_gazetteer(tmp_path_factory.mktemp("gazetteer"))


def spans(entities: list[dict]) -> list[tuple[str, int, int, str]]:
    return [(e["type"], e["start"], e["end"], e["text"]) for e in entities]


# ---------------------------------------------------------------------------------------------------------------
# Pure logic


@pytest.mark.parametrize(
    "text, words",
    [
        (
            "Angela  Merkel, (CDU) besuchte\tParis!",
            ["Angela", "Merkel", ",", "(", "CDU", ")", "besuchte", "Paris", "!"],
        ),
        ("  Zoë Saldaña visitó São Paulo...  ", ["Zoë", "Saldaña", "visitó", "São", "Paulo", ".", ".", "."]),
        ("Café\u0301 l'Étoile-d'Or", ["Café\u0301", "l'Étoile-d'Or"]),
        ("Hessen-Kassel, Merkel's Partei", ["Hessen-Kassel", ",", "Merkel", "'s", "Partei"]),
        ("'s-Hertogenbosch -- a- -b", ["'", "s-Hertogenbosch", "-", "-", "a", "-", "-", "b"]),
        ("Владимир Путин посетил Москву.", ["Владимир", "Путин", "посетил", "Москву", "."]),
        ("زار محمد القاهرة.", ["زار", "محمد", "القاهرة", "."]),
        ("东京是日本的首都。", ["东", "京", "是", "日", "本", "的", "首", "都", "。"]),
        ("U.S. $5 – 6–3, 3.5", ["U.S", ".", "$", "5", "–", "6–3", ",", "3.5"]),
        ("", []),
        (" \n\t ", []),
    ],
)
def test_split_words_offsets_slice_back_to_the_words(text, words):
    found = split_words(text)
    assert [text[start:end] for start, end in found] == words
    assert all(start < end for start, end in found)
    assert found == sorted(found)


def test_plan_windows_fit_the_budget_and_overlap():
    assert plan_windows([2, 1, 3, 1, 2, 2, 1], budget=5, overlap=2) == [(0, 2), (1, 4), (3, 6), (5, 7)]
    assert plan_windows([1, 1, 1], budget=10, overlap=2) == [(0, 3)]
    assert plan_windows([0, 2, 0], budget=2, overlap=1) == [(0, 3)]
    assert plan_windows([1, 9, 1], budget=4, overlap=1) == [(0, 1), (1, 2), (2, 3)]  # an oversize word alone
    assert plan_windows([3, 3, 3, 3], budget=6, overlap=0) == [(0, 2), (2, 4)]
    assert plan_windows([], budget=4, overlap=1) == []


def test_central_windows_pick_the_window_with_most_context():
    assert central_windows([(0, 6), (3, 9)], 9) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert central_windows([(0, 2), (1, 4), (3, 6), (5, 7)], 7) == [0, 0, 1, 1, 2, 2, 3]
    assert central_windows([(0, 3)], 3) == [0, 0, 0]


def test_extract_entities_groups_like_the_pipeline():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-LOC", "I-PER", "O", "ORG"]
    expected = [("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6), ("LOC", 6, 7), ("PER", 7, 8), ("ORG", 9, 10)]
    assert extract_entities(tags) == expected
    assert extract_entities(["O", "O"]) == []


# ---------------------------------------------------------------------------------------------------------------
# The tagger, end to end with a real model


def test_tagger_exact_entities_and_offsets(gazetteer):
    tagger = Tagger.load(str(gazetteer))
    texts = ["Angela Merkel  besuchte Paris.", "Die Deutsche Bahn fährt nach  Zürich!", "", "  Москву, Johann Bach"]
    found = tagger.tag(texts)
    assert [spans(entities) for entities in found] == [
        [("PER", 0, 13, "Angela Merkel"), ("LOC", 24, 29, "Paris")],
        [("ORG", 4, 17, "Deutsche Bahn"), ("LOC", 18, 23, "fährt"), ("LOC", 30, 36, "Zürich"), ("LOC", 36, 37, "!")],
        [],
        [("LOC", 2, 8, "Москву"), ("LOC", 8, 9, ","), ("PER", 10, 21, "Johann Bach")],
    ]
    assert found[0][0]["score"] == pytest.approx(float(torch.tensor([4.0] + [0.0] * 6).softmax(0)[0]), abs=1e-5)


def test_long_text_windows_lose_and_duplicate_nothing(gazetteer):
    sentence = "Angela Merkel besuchte Paris. "  # 9 sub-tokens; the entity 'Angela Merkel' has 4
    text = sentence * 25
    tagger = Tagger.load(str(gazetteer), max_length=12, overlap=3)  # 10 sub-tokens a window: many borders
    counts = [len(p) for p in tagger.word_pieces([[text[s:e] for s, e in split_words(text)]])[0]]
    assert len(plan_windows(counts, 10, 3)) > 25
    expected = []
    for k in range(25):
        base = k * len(sentence)
        expected += [("PER", base, base + 13, "Angela Merkel"), ("LOC", base + 23, base + 28, "Paris")]
    assert spans(tagger.tag([text])[0]) == expected
    assert spans(Tagger.load(str(gazetteer), max_length=64).tag([text[:60]])[0]) == expected[:4]


def test_batch_size_and_order_do_not_change_results(gazetteer):
    texts = ["Paris", "Angela Merkel besuchte Paris. " * 6, "Johann Bach lebte in Berlin", "x"]
    one = Tagger.load(str(gazetteer), max_length=16, batch_size=1).tag(texts)
    many = Tagger.load(str(gazetteer), max_length=16, batch_size=64).tag(texts)
    assert one == many


def test_batches_hold_at_most_the_token_budget(gazetteer):
    """Windows go to batches by padded tokens too: a long document's windows are split, with the same entities."""
    texts = ["Paris", "Angela Merkel besuchte Paris. " * 6, "Johann Bach lebte in Berlin", "x"]
    tagger = Tagger.load(str(gazetteer), max_length=16, batch_size=64)
    capped = Tagger.load(str(gazetteer), max_length=16, batch_size=64)
    capped.max_batch_tokens = 40
    seen = []
    run = capped.word_probabilities
    capped.word_probabilities = lambda batch: seen.append(batch) or run(batch)
    assert capped.tag(texts) == tagger.tag(texts)
    widths = [[len(window.input_ids) for window in batch] for batch in seen]
    assert len(widths) > 2 and all(len(batch) * max(batch) <= 40 for batch in widths)
    assert sum(map(len, widths)) > len(texts)  # the long text went in several windows


PIPELINE_TEXTS = [
    "Angela Merkel besuchte Paris.",
    "Die Deutsche Bahn fährt nach  Berlin , und Johann   Bach lebte in Leipzig!",
    "Zoë visitó São Paulo (Brasil) -- Merkel's bahn.",
    "Москву и Berlin: 東京, Paris; Bach.",
]


def entity_tuples(entities: list[dict], type_key: str) -> list[tuple[str, int, int]]:
    return [(e[type_key], e["start"], e["end"]) for e in entities]


def assert_same_as_pipeline(model_dir, texts: list[str]) -> int:
    """Our entities equal the pipeline's (type and offsets; scores to float tolerance); returns how many."""
    texts = [t for t in texts if not any(inside_word(t, i) for i in range(len(t)))]  # BERT splits Baden-Württemberg
    tagger = Tagger.load(str(model_dir), decoding="argmax")  # the pipeline reads each word's most probable tag
    reference = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first", device="cpu")
    ours = tagger.tag(texts)
    total = 0
    for text, mine in zip(texts, ours):
        theirs = reference(text)
        assert entity_tuples(mine, "type") == entity_tuples(theirs, "entity_group"), text
        assert [e["score"] for e in mine] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
        total += len(mine)
    return total


def test_same_entities_as_transformers_pipeline(gazetteer):
    assert assert_same_as_pipeline(gazetteer, PIPELINE_TEXTS) > 10


@needs_shared
def test_same_entities_as_pipeline_with_minilm(tmp_path):
    """The real uncased WordPiece tokenizer (accents stripped, CJK split) under a fixed random, decisive head."""
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        MINILM, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={t: i for i, t in enumerate(LABELS)}
    )
    with torch.no_grad():
        model.classifier.weight.mul_(20)  # clear winners: no argmax decided by float noise
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(tmp_path)
    panx = [
        " ".join(s["tokens"]) for lang in ("de", "en", "fr") for s in read_conll(PANX / lang / "validation.conll")[:15]
    ]
    assert assert_same_as_pipeline(tmp_path, PIPELINE_TEXTS + panx) > 50


# ---------------------------------------------------------------------------------------------------------------
# Command line


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_texts_as_arguments(gazetteer, capsys):
    assert main(["--model", str(gazetteer), "Angela Merkel besuchte Paris.", "und nach"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == ["Angela Merkel besuchte Paris.", "und nach"]
    assert spans(rows[0]["entities"]) == [("PER", 0, 13, "Angela Merkel"), ("LOC", 23, 28, "Paris")]
    assert rows[1]["entities"] == []


def test_cli_text_file_keeps_one_line_per_document(gazetteer, tmp_path):
    source = tmp_path / "docs.txt"
    source.write_text("Johann Bach lebte in Leipzig\n\nParis  und Berlin\n", encoding="utf-8")
    assert main(["--model", str(gazetteer), "--input", str(source), "--output", str(tmp_path / "out.jsonl")]) == 0
    rows = read_lines(tmp_path / "out.jsonl")
    assert [row["text"] for row in rows] == ["Johann Bach lebte in Leipzig", "", "Paris  und Berlin"]
    assert spans(rows[2]["entities"]) == [("LOC", 0, 5, "Paris"), ("LOC", 11, 17, "Berlin")]


def test_cli_json_lines_keep_other_fields(gazetteer, tmp_path):
    source = tmp_path / "docs.jsonl"
    rows = [{"id": 7, "body": "Merkel in Paris"}, {"id": 8, "body": "Bahn"}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    args = ["--model", str(gazetteer), "--input", str(source), "--text-field", "body", "--output", str(output)]
    # argmax: the gazetteer tags a lone "Merkel" I-PER, which Viterbi may not start an entity with
    assert main([*args, "--chunk-size", "1", "--batch-size", "1", "--decode", "argmax"]) == 0
    found = read_lines(output)
    assert [(row["id"], row["body"]) for row in found] == [(7, "Merkel in Paris"), (8, "Bahn")]
    assert spans(found[0]["entities"]) == [("PER", 0, 6, "Merkel"), ("LOC", 10, 15, "Paris")]
    assert spans(found[1]["entities"]) == [("ORG", 0, 4, "Bahn")]


def test_cli_bad_input_exits_2(gazetteer, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"no_text": 1}\n', encoding="utf-8")
    assert main(["--model", str(gazetteer), "--input", str(bad), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing"), "text"]) == 2
    assert main(["--model", str(gazetteer)]) == 2
    assert main(["--model", str(gazetteer), "--input", str(tmp_path / "none.txt")]) == 2
    assert main(["--model", str(gazetteer), "--max-length", "2", "text"]) == 2


def test_cli_bad_line_late_in_the_input_writes_nothing_and_keeps_the_old_output(gazetteer, tmp_path, capsys):
    bad = tmp_path / "late.jsonl"
    bad.write_text("".join(json.dumps({"text": f"Merkel {i}"}) + "\n" for i in range(9)) + "{oops\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    output.write_text("earlier result\n", encoding="utf-8")
    args = ["--model", str(gazetteer), "--input", str(bad), "--output", str(output), "--chunk-size", "2"]
    assert main(args) == 2
    assert "late.jsonl:10: not valid JSON" in capsys.readouterr().err
    assert output.read_text(encoding="utf-8") == "earlier result\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.jsonl", "out.jsonl"]


def test_cli_text_file_that_is_not_utf8_names_the_line(gazetteer, tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Paris\nMünchen\n".encode("latin-1"))
    assert main(["--model", str(gazetteer), "--input", str(latin), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "latin1.txt:2: not UTF-8 text" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_model_type_without_an_ner_accel_head_loads_through_transformers(tmp_path):
    """DistilBERT has no head in ner_accel.modeling.heads: predict falls back to transformers' own class, same entities."""
    from transformers import DistilBertConfig, DistilBertForTokenClassification

    tokenizer = build_tokenizer()
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=4, hidden_dim=64, max_position_embeddings=64,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={t: i for i, t in enumerate(LABELS)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = DistilBertForTokenClassification(config)
    with torch.no_grad():  # a decisive head, so entities appear
        model.classifier.weight.mul_(50)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert type(Tagger.load(str(tmp_path)).model).__name__ == "DistilBertForTokenClassification"
    assert assert_same_as_pipeline(tmp_path, PIPELINE_TEXTS) > 0


def test_cli_text_field_applies_to_json_lines_only_and_any_json_lines_suffix(gazetteer, tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("Angela Merkel besuchte Paris\n", encoding="utf-8")
    rows = tmp_path / "docs.NDJSON"
    rows.write_text(json.dumps({"body": "Angela Merkel besuchte Paris"}) + "\n", encoding="utf-8")
    for source in (text, rows):
        output = tmp_path / f"{source.name}.out"
        args = ["--model", str(gazetteer), "--input", str(source), "--text-field", "body", "--output", str(output)]
        assert main(args) == 0
        assert [e["text"] for e in read_lines(output)[0]["entities"]] == ["Angela Merkel", "Paris"]


def test_cli_refuses_a_model_without_ner_tags_and_a_bad_device(gazetteer, tmp_path, capsys):
    from transformers import BertConfig, BertForTokenClassification

    base = tmp_path / "base"  # what a pretrained encoder's directory gives: a random head with LABEL_n names
    BertForTokenClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                          intermediate_size=8)).save_pretrained(base)  # fmt: skip
    AutoTokenizer.from_pretrained(str(gazetteer)).save_pretrained(base)
    assert main(["--model", str(base), "Paris"]) == 2
    assert "LABEL_0" in capsys.readouterr().err
    assert main(["--model", str(gazetteer), "--device", "gpu", "Paris"]) == 2
    assert "--device gpu: not a device name" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--model", str(gazetteer), "--device", "cuda", "Paris"]) == 2
        assert "no such CUDA device" in capsys.readouterr().err


def test_cli_refuses_outputs_it_cannot_write_before_tagging(gazetteer, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("Angela Merkel besuchte Paris\n", encoding="utf-8")
    (tmp_path / "taken").mkdir()
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    cases = [
        (str(tmp_path / "taken"), "is a directory"),
        (str(tmp_path / "afile" / "out.jsonl"), "is a file, not a directory"),
        ("", "not a file path"),
        (str(source), "is the input file"),
    ]
    for output, expected in cases:
        assert main(["--model", str(gazetteer), "--input", str(source), "--output", output]) == 2
        assert expected in capsys.readouterr().err
    assert source.read_text(encoding="utf-8") == "Angela Merkel besuchte Paris\n"
    assert main(["--model", str(gazetteer), "--max-length", "0", "Paris"]) == 2
    assert "--max-length must leave room for special tokens and a word (3 or more), got 0" in capsys.readouterr().err


def test_a_directory_that_is_not_a_model_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert main(["--model", str(tmp_path), "Paris"]) == 2
    assert f"--model {tmp_path}: cannot load its" in capsys.readouterr().err


def test_an_invisible_word_inside_an_entity_keeps_it_whole(gazetteer):
    """A zero-width space standing alone has no sub-token: the model sees the same input, so the same entities."""
    tagger = Tagger.load(str(gazetteer))
    plain, spaced = tagger.tag(["Angela Merkel besuchte Paris.", "Angela \u200b Merkel besuchte Paris. \u200b"])
    assert [(e["type"], e["text"]) for e in plain] == [("PER", "Angela Merkel"), ("LOC", "Paris")]
    assert [(e["type"], e["text"]) for e in spaced] == [("PER", "Angela \u200b Merkel"), ("LOC", "Paris")]
