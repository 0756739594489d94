"""Tag schemes: IOB1, IOB2, BIOES/IOBES and BILOU files read as IOB2 (detected or named), and F1 independent of them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from ner_accel.data.corpus import CorpusOptions, load_corpus
from ner_accel.data.readers import TAG_SCHEMES, read_conll, read_jsonl, read_split
from ner_accel.data.tag_schemes import check_sequence, detect_scheme, read_as_iob2, scheme_name, to_iob2
from ner_accel.errors import UsageError
from ner_accel.evaluation.metrics import entity_metrics
from tests.conftest import PANX

# One sentence in every scheme: a two-token PER, two adjacent one-token LOCs, O, a three-token ORG, then a LOC and
# a PER of one token each, touching (type switches, adjacency of one type, single tokens, an inner I-).
WORDS = "Angela Merkel Paris Berlin und Deutsche Bahn AG Rom Bach".split()
IOB2 = "B-PER I-PER B-LOC B-LOC O B-ORG I-ORG I-ORG B-LOC B-PER".split()
WRITTEN = {
    "iob1": "I-PER I-PER I-LOC B-LOC O I-ORG I-ORG I-ORG I-LOC I-PER".split(),
    "iob2": IOB2,
    "bioes": "B-PER E-PER S-LOC S-LOC O B-ORG I-ORG E-ORG S-LOC S-PER".split(),
    "bilou": "B-PER L-PER U-LOC U-LOC O B-ORG I-ORG L-ORG U-LOC U-PER".split(),
}


def conll(*sentences: list[tuple[str, str]]) -> str:
    return "\n".join("".join(f"{word}\t{tag}\n" for word, tag in sentence) for sentence in sentences)


def write_conll(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def refusal(call, *args) -> str:
    with pytest.raises(UsageError) as caught:
        call(*args)
    return str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# Conversion of one sentence


@pytest.mark.parametrize("scheme", ["iob1", "iob2", "bioes", "bilou"])
def test_each_scheme_converts_to_the_same_iob2(scheme):
    assert to_iob2(WRITTEN[scheme], scheme) == IOB2
    assert detect_scheme([WRITTEN[scheme]]) == scheme
    assert read_as_iob2([WRITTEN[scheme]], [list(range(1, 11))], "f") == (scheme, [IOB2])


@pytest.mark.parametrize(
    "scheme, written, expected",
    [
        # IOB1: I- after O, another type or the sentence start opens an entity; B- only splits one type's entities
        ("iob1", "I-PER I-LOC I-LOC B-LOC O I-ORG", "B-PER B-LOC I-LOC B-LOC O B-ORG"),
        ("iob1", "I-MISC B-MISC B-MISC", "B-MISC B-MISC B-MISC"),
        # IOB2 stays as written, a stray I- after O included: seqeval reads it as an entity start
        ("iob2", "O I-LOC B-PER B-PER", "O I-LOC B-PER B-PER"),
        ("bioes", "S-PER S-PER B-LOC I-LOC I-LOC E-LOC", "B-PER B-PER B-LOC I-LOC I-LOC I-LOC"),
        ("bioes", "B-ORG E-ORG B-ORG E-ORG S-LOC", "B-ORG I-ORG B-ORG I-ORG B-LOC"),
        ("bilou", "U-PER U-PER B-LOC I-LOC L-LOC O", "B-PER B-PER B-LOC I-LOC I-LOC O"),
        ("bilou", "B-ORG L-ORG U-LOC B-ORG L-ORG", "B-ORG I-ORG B-LOC B-ORG I-ORG"),
    ],
)
def test_conversion_by_hand(scheme, written, expected):
    assert to_iob2(written.split(), scheme) == expected.split()


def test_scheme_names_accept_any_case_and_iobes():
    assert TAG_SCHEMES == ("auto", "iob1", "iob2", "bioes", "bilou")
    assert [scheme_name(name) for name in ("IOBES", "iobes", "BIOES", "BILOU", "IOB1", "Auto")] == [
        "bioes", "bioes", "bioes", "bilou", "iob1", "auto"
    ]  # fmt: skip
    assert refusal(scheme_name, "bio") == (
        "--tag-scheme 'bio': unknown tag scheme; use one of auto, iob1, iob2, bioes, bilou (iobes = bioes)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Detection from all the tags of a file


@pytest.mark.parametrize(
    "tag_lists, expected",
    [
        ([["O", "O"], ["O"]], "iob2"),  # no entity: every reading is the same
        ([["B-PER", "O", "B-LOC"], ["B-ORG", "B-ORG"]], "iob2"),  # O and B- only (one-token entities in IOB2)
        ([["B-PER", "I-PER", "O"], ["O", "I-LOC"], ["B-ORG"], ["B-LOC", "O"]], "iob2"),  # a few stray I- after O
        ([["I-PER", "I-PER", "O"], ["I-LOC", "B-LOC"]], "iob1"),  # B- only right after its own type
        ([["I-PER", "O", "I-LOC"], ["I-ORG"]], "iob2"),  # no B- to tell IOB1 by: read as ner_accel always has
        ([["S-PER", "O"], ["S-LOC"]], "bioes"),  # one-token entities in BIOES
        ([["B-PER", "E-PER"], ["O"]], "bioes"),
        ([["U-PER", "O"], ["U-LOC"]], "bilou"),  # one-token entities in BILOU
        ([["B-PER", "I-PER", "L-PER"]], "bilou"),
    ],
)
def test_detection(tag_lists, expected):
    assert detect_scheme(tag_lists) == expected


def test_iob1_without_b_read_as_iob2_gives_iob1s_entities():
    """The one undecidable case is read as IOB2 (as before); seqeval finds the entities IOB1 would give."""
    written = ["I-PER", "I-PER", "O", "I-LOC", "I-ORG"]
    assert detect_scheme([written]) == "iob2"
    assert get_entities(to_iob2(written, "iob2")) == get_entities(to_iob2(written, "iob1")) == [
        ("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4)
    ]  # fmt: skip


def test_mixed_bioes_and_bilou_is_refused():
    message = refusal(detect_scheme, [["O", "S-PER"], ["B-LOC", "L-LOC"]], "train.conll")
    assert message == (
        "train.conll: mixes BIOES tags (S-/E-: S-PER at line 2) and BILOU tags (U-/L-: L-LOC at line 5); "
        "write one scheme throughout the file"
    )


def test_iob1_or_iob2_ambiguity_is_refused_with_the_fix():
    """B- after O rules out IOB1, but more entities start with I- than with B-: neither reading fits."""
    tag_lists = [["I-PER", "I-PER"], ["O", "I-LOC", "O", "B-ORG"], ["I-ORG"]]
    assert refusal(detect_scheme, tag_lists, "train.conll") == (
        "train.conll: cannot tell IOB1 from IOB2: 3 entities start with I- (IOB1; first I-PER at line 1) and 1 with "
        "B- after O or another type (IOB2; first B-ORG at line 7); pass --tag-scheme iob1 or --tag-scheme iob2"
    )
    assert read_as_iob2(tag_lists, [[1, 2], [4, 5, 6, 7], [9]], "f", "iob1")[1] == [
        ["B-PER", "I-PER"], ["O", "B-LOC", "O", "B-ORG"], ["B-ORG"]
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Invalid BIOES / BILOU sequences, named at the offending tag's file:line


OPEN_IT = "start the entity with B-{0}, or tag a one-token entity {1}-{0}"
CLOSE_IT = "end the entity with {2}-{0}, or tag a one-token entity {1}-{0}"
SHAPES = "an entity of several tokens is B-{0} I-{0} ... {2}-{0}, one of a single token {1}-{0}"


@pytest.mark.parametrize(
    "scheme, tags, problem, fix",
    [
        ("bioes", "O E-PER", "f:11: E-PER without an open B-PER in BIOES", OPEN_IT.format("PER", "S", "E")),
        ("bilou", "B-LOC L-PER", "f:11: L-PER without an open B-PER in BILOU", OPEN_IT.format("PER", "U", "L")),
        ("bioes", "O I-PER E-PER", "f:11: I-PER outside an entity in BIOES", SHAPES.format("PER", "S", "E")),
        ("bilou", "B-LOC I-PER", "f:11: I-PER inside B-LOC of line 10 in BILOU", SHAPES.format("PER", "U", "L")),
        ("bioes", "B-PER O", "f:10: B-PER is never closed in BIOES (O follows at line 11)",
         CLOSE_IT.format("PER", "S", "E")),
        ("bioes", "B-PER S-LOC", "f:10: B-PER is never closed in BIOES (S-LOC follows at line 11)",
         CLOSE_IT.format("PER", "S", "E")),
        ("bilou", "O B-ORG I-ORG", "f:11: B-ORG is never closed in BILOU (the sentence ends after it)",
         CLOSE_IT.format("ORG", "U", "L")),
    ],
)  # fmt: skip
def test_invalid_sequences_name_the_line_and_the_fix(scheme, tags, problem, fix):
    tags = tags.split()
    assert refusal(check_sequence, tags, [10, 11, 12][: len(tags)], "f", scheme) == f"{problem}; {fix}"


def test_reader_errors_name_the_line_past_docstart_and_comments(tmp_path):
    path = write_conll(
        tmp_path / "train.conll", "-DOCSTART-\tO\n\n# id 7\nAngela\tB-PER\nMerkel\tI-PER\n.\tO\n\nRom\tS-LOC\n"
    )
    assert refusal(read_conll, path) == (
        f"{path}:4: B-PER is never closed in BIOES (O follows at line 6); end the entity with E-PER, or tag a "
        "one-token entity S-PER (read as BIOES for its S-LOC at line 8; if the file is in another scheme, "
        "pass --tag-scheme)"
    )
    assert refusal(read_conll, path, "iob1") == (
        f"{path}:8: tag 'S-LOC' is not IOB1; use O, B-<TYPE> or I-<TYPE> (e.g. B-PER)"
    )


def test_a_named_scheme_accepts_only_its_own_prefixes(tmp_path):
    path = write_conll(tmp_path / "train.conll", "Angela\tB-PER\nMerkel\tE-PER\n\nRom\tU-LOC\n")
    assert refusal(read_conll, path, "bioes") == (
        f"{path}:4: tag 'U-LOC' is not BIOES; use O, B-<TYPE>, I-<TYPE>, E-<TYPE> or S-<TYPE> (e.g. B-PER)"
    )
    assert refusal(read_conll, path, "iob2") == (
        f"{path}:2: tag 'E-PER' is not IOB2; use O, B-<TYPE> or I-<TYPE> (e.g. B-PER)"
    )
    assert refusal(read_conll, path) == (
        f"{path}: mixes BIOES tags (S-/E-: E-PER at line 2) and BILOU tags (U-/L-: U-LOC at line 4); "
        "write one scheme throughout the file"
    )
    assert refusal(read_split, path, "bio").startswith("--tag-scheme 'bio': unknown tag scheme")


def test_jsonl_is_read_in_any_scheme_and_errors_name_its_line(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"tokens": WORDS, "ner_tags": WRITTEN["bilou"]}, {"tokens": ["Rom", "ist"], "ner_tags": ["L-LOC", "O"]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert refusal(read_jsonl, path, "bilou") == (
        f"{path}:2: L-LOC without an open B-LOC in BILOU; start the entity with B-LOC, or tag a one-token entity U-LOC"
    )
    path.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    assert read_jsonl(path) == [{"tokens": WORDS, "tags": IOB2, "line": 1}]


# ---------------------------------------------------------------------------------------------------------------
# Readers and corpus: IOB2 out, one log line per file


@pytest.mark.parametrize(
    "scheme, logged",
    [("iob2", "tags read as IOB2"), ("iob1", "tags read as IOB1, converted to IOB2"),
     ("bioes", "tags read as BIOES, converted to IOB2"), ("bilou", "tags read as BILOU, converted to IOB2")],
)  # fmt: skip
def test_one_log_line_per_file_says_what_was_read(scheme, logged, tmp_path, caplog):
    path = write_conll(tmp_path / "train.conll", conll(list(zip(WORDS, WRITTEN[scheme]))))
    with caplog.at_level(logging.INFO, logger="ner_accel.data.readers"):
        sentences = read_split(path)
    assert sentences == [{"tokens": WORDS, "tags": IOB2, "line": 1}]
    assert [r.getMessage() for r in caplog.records if r.name == "ner_accel.data.readers"] == [f"{path}: {logged}"]


def test_load_corpus_reads_each_file_in_its_scheme_and_passes_a_named_one(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.conll", conll(list(zip(WORDS, WRITTEN["bioes"]))))
    write_conll(data / "validation.conll", conll(list(zip(WORDS, WRITTEN["iob1"]))))
    corpus = load_corpus(CorpusOptions(data_dir=[str(data)]))
    assert corpus.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert corpus.train["tags"] == corpus.validation["data"]["tags"] == [IOB2]
    message = refusal(load_corpus, CorpusOptions(data_dir=[str(data)], tag_scheme="bilou"))
    assert message.startswith(f"{data / 'train.conll'}:2: tag 'E-PER' is not BILOU")


# CoNLL-2003's eng.train as distributed: token, POS, chunk, NER columns, IOB1 (chunk tags too), -DOCSTART- lines.
CONLL2003 = """\
-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
to TO I-VP O
boycott VB I-VP O
British JJ I-NP I-MISC
lamb NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- O O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O

Australian JJ I-NP I-MISC
Indonesian JJ I-NP B-MISC
talks NNS I-NP O
in IN I-PP O
Canberra NNP I-NP I-LOC
"""


def test_multi_column_conll2003_in_iob1(tmp_path, caplog):
    path = write_conll(tmp_path / "eng.train", CONLL2003)
    expected = [
        {"tokens": ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
         "tags": ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"], "line": 3},
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"], "line": 13},
        {"tokens": ["BRUSSELS", "1996-08-22"], "tags": ["B-LOC", "O"], "line": 18},
        {"tokens": ["Australian", "Indonesian", "talks", "in", "Canberra"],
         "tags": ["B-MISC", "B-MISC", "O", "O", "B-LOC"], "line": 21},
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        assert read_conll(path) == expected  # detected: its one B- follows I-MISC
    assert f"{path}: tags read as IOB1, converted to IOB2" in caplog.messages
    assert read_conll(path, "iob1") == expected
    # Without the sentence that holds a B-, nothing tells IOB1 from IOB2 with I- starts: naming the scheme does.
    first_three = write_conll(tmp_path / "first.train", CONLL2003.split("\nAustralian")[0])
    assert read_conll(first_three, "iob1") == expected[:3]
    assert [s["tags"] for s in read_conll(first_three)][1] == ["I-PER", "I-PER"]


# ---------------------------------------------------------------------------------------------------------------
# Real data: PAN-X written in every scheme by an independent writer reads back to the same IOB2 and the same F1

PANX_DE_VALIDATION = PANX / "de" / "validation.conll"
needs_panx = pytest.mark.skipif(
    not PANX_DE_VALIDATION.is_file(),
    reason="../shared (real PAN-X data) is absent; it ships beside the checkout in CI",
)


def plain_conll_sentences(path: Path, limit: int) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) of the first sentences of a token<TAB>tag file, parsed without ner_accel."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")[:limit]
    rows = [[line.split("\t") for line in block.splitlines()] for block in blocks]
    return [([token for token, _ in sentence], [tag for _, tag in sentence]) for sentence in rows]


def write_in_scheme(tags: list[str], scheme: str) -> list[str]:
    """Strict IOB2 tags (seqeval's entities) rewritten by each scheme's definition."""
    written = ["O"] * len(tags)
    for kind, start, end in get_entities(tags):
        for position in range(start, end + 1):
            if scheme == "iob1":  # B- only where an entity touches the one before it of the same type
                touches_same_type = position == start and start > 0 and written[start - 1][2:] == kind
                prefix = "B" if touches_same_type else "I"
            elif start == end:
                prefix = {"bioes": "S", "bilou": "U"}[scheme]
            else:
                last = {"bioes": "E", "bilou": "L"}[scheme]
                prefix = "B" if position == start else last if position == end else "I"
            written[position] = f"{prefix}-{kind}"
    return written


def predicted_tags(gold: list[list[str]]) -> list[list[str]]:
    """A fixed imperfect prediction: per sentence kept, all O, first entity retyped, or last entity token dropped."""
    predictions = []
    for number, tags in enumerate(gold):
        tags = list(tags)
        entities = get_entities(tags)
        if number % 4 == 1:
            tags = ["O"] * len(tags)
        elif number % 4 == 2 and entities:
            kind, start, end = entities[0]
            other = "ORG" if kind != "ORG" else "PER"
            tags[start : end + 1] = [f"{t[:2]}{other}" for t in tags[start : end + 1]]
        elif number % 4 == 3 and entities:
            tags[entities[-1][2]] = "O"  # a one-token entity is missed, a longer one ends early
        predictions.append(tags)
    return predictions


@needs_panx
@pytest.mark.shared
def test_panx_in_every_scheme_reads_back_to_the_same_entities_and_f1(tmp_path, caplog):
    original = plain_conll_sentences(PANX_DE_VALIDATION, 2000)
    assert len(original) == 2000
    gold = [tags for _, tags in original]
    predictions = predicted_tags(gold)
    original_f1 = entity_metrics(gold, predictions)["f1"]
    assert original_f1 == pytest.approx(0.4598, abs=5e-5)  # the prediction is neither perfect nor empty
    for scheme in ("iob1", "bioes", "bilou"):
        written = [write_in_scheme(tags, scheme) for tags in gold]
        if scheme == "iob1":  # B- between touching entities of one type: what tells IOB1 apart
            assert any(t.startswith("B-") for tags in written for t in tags)
        else:
            assert any(t.startswith(("E-", "L-")) for tags in written for t in tags)
        path = tmp_path / f"validation.{scheme}.conll"
        path.write_text(conll(*(list(zip(tokens, tags)) for (tokens, _), tags in zip(original, written))), "utf-8")
        for tag_scheme in ("auto", scheme):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="ner_accel.data"):
                sentences = read_split(path, tag_scheme)
            assert caplog.messages == [f"{path}: tags read as {scheme.upper()}, converted to IOB2"]
            assert [s["tokens"] for s in sentences] == [tokens for tokens, _ in original]
            assert [s["tags"] for s in sentences] == gold
            read_gold = [s["tags"] for s in sentences]
            assert [get_entities(tags) for tags in read_gold] == [get_entities(tags) for tags in gold]
            assert entity_metrics(read_gold, predictions)["f1"] == original_f1


@pytest.mark.parametrize("scheme", ["iob1", "bioes", "bilou"])
def test_training_and_evaluation_do_not_depend_on_the_files_scheme(scheme, tiny_model_no_dropout, tmp_path):
    """The whole command line: the same sentences in another scheme train the same labels to the same metrics."""
    from conftest import TRAIN, VALIDATION, run_training

    from ner_accel import evaluate

    def write_dir(directory: Path, rewrite) -> Path:
        directory.mkdir()
        for name, text in (("train", TRAIN), ("validation", VALIDATION)):
            blocks = [b for b in text.strip().split("\n\n") if not b.startswith("-DOCSTART-")]
            sentences = [[line.split("\t") for line in block.splitlines()] for block in blocks]
            lines = [
                "\n".join(f"{w}\t{t}" for w, t in zip([w for w, _ in s], rewrite([t for _, t in s]))) for s in sentences
            ]
            (directory / f"{name}.conll").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
        return directory

    runs = {}
    for name, rewrite in (("iob2", list), (scheme, lambda tags: write_in_scheme(tags, scheme))):
        data = write_dir(tmp_path / name, rewrite)
        # Named: these IOB1 files have no B- (no entity touches one of its type), which auto reads as IOB2 (its rule)
        args = ["--model", tiny_model_no_dropout, "--data-dir", data, "--output-dir", tmp_path / "out", "--run-name",
                name, "--per-device-train-batch-size", "2", "--num-train-epochs", "2", "--learning-rate", "1e-2",
                "--tag-scheme", "iob2" if name == "iob2" else scheme]  # fmt: skip
        assert run_training(args) == 0
        runs[name] = json.loads((tmp_path / "out" / name / "metrics.json").read_text())["final"][name]
        config = json.loads((tmp_path / "out" / name / "train_config.json").read_text())
        assert config["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert runs[scheme]["f1"] == runs["iob2"]["f1"] and runs[scheme]["per_type"] == runs["iob2"]["per_type"]
    output = tmp_path / "eval.json"
    model, data = tmp_path / "out" / "iob2", tmp_path / scheme
    assert (
        evaluate.main(
            [str(a) for a in ("--model", model, "--data-dir", data, "--tag-scheme", scheme, "--output", output)]
        )
        == 0
    )
    assert json.loads(output.read_text())["models"][0]["results"][scheme]["f1"] == runs["iob2"]["f1"]
