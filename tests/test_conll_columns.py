"""CoNLL files of several columns: the words and the tags read from the right columns, or refused with the flag to
pass; comment lines, invisible lines, headers, CoNLL-U's extra lines; the flags by number, from the end and by name."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import run_training

from ner_accel.data.corpus import CorpusOptions, load_corpus
from ner_accel.data.readers import ReadOptions, read_conll, read_split
from ner_accel.errors import UsageError

ASSETS = Path(__file__).parent / "assets" / "conll"
OUTER = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def refusal(call, *args) -> str:
    with pytest.raises(UsageError) as caught:
        call(*args)
    return str(caught.value)


def layout_log(caplog, path: Path) -> list[str]:
    return [m for m in caplog.messages if m.startswith(f"{path}: ") and "columns" in m]


# ---------------------------------------------------------------------------------------------------------------
# The corpus layout: index, token, outer tag, nested tag, '#' source lines (GermEval 2014)


def test_index_token_outer_nested_reads_the_words_and_the_outer_tags(caplog):
    path = ASSETS / "germeval_layout_train.tsv"
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        sentences = read_conll(path)
    assert sentences[0] == {
        "tokens": ["Angela", "Merkel", "besuchte", "Paris", "."],
        "tags": ["B-PER", "I-PER", "O", "B-LOC", "O"],
        "line": 2,
    }
    assert sentences[1]["tokens"] == ["Die", "Deutsche", "Bahn", "fährt", "nach", "Berlin"]
    assert sentences[1]["tags"] == ["O", "B-ORG", "I-ORG", "O", "O", "B-LOC"]  # not the nested B-LOCderiv
    assert not any(token.isdigit() for s in sentences for token in s["tokens"])
    assert layout_log(caplog, path) == [
        f"{path}: 4 columns; words from column 1, tags from column 2; column 0 counts the words (an index); the "
        "entities of column 3 all lie inside those of column 2: reading column 2, the outer level (--tag-column 3 "
        "reads the nested one); 5 comment lines skipped"
    ]
    nested = read_conll(path, ReadOptions(tag_column="3"))
    assert nested[1]["tags"] == ["O", "B-LOCderiv", "O", "O", "O", "O"]
    assert nested[1]["tokens"] == sentences[1]["tokens"]


def test_train_and_evaluate_on_the_corpus_layout(tiny_model, tmp_path, capsys):
    from ner_accel import evaluate

    data = tmp_path / "germeval"
    data.mkdir()
    shutil.copy(ASSETS / "germeval_layout_train.tsv", data / "train.tsv")
    shutil.copy(ASSETS / "germeval_layout_dev.tsv", data / "dev.tsv")
    corpus = load_corpus(CorpusOptions(data_dir=[str(data)]))
    assert corpus.labels == OUTER
    assert corpus.train["tokens"][0] == ["Angela", "Merkel", "besuchte", "Paris", "."]
    out = tmp_path / "out"
    assert run_training(["--model", tiny_model, "--data-dir", data, "--output-dir", out, "--run-name", "g",
                         "--num-train-epochs", "1"]) == 0  # fmt: skip
    assert json.loads((out / "g" / "train_config.json").read_text())["labels"] == OUTER
    report = tmp_path / "eval.json"
    assert evaluate.main(["--model", str(out / "g"), "--data-dir", str(data), "--output", str(report)]) == 0
    assert json.loads(report.read_text())["models"][0]["results"]["germeval"]["sentences"] == 3
    # the nested level, asked for: its labels, from the same words; evaluate passes the flag to its reader too
    nested = load_corpus(CorpusOptions(data_dir=[str(data)], tag_column="3"))
    assert nested.labels == ["O", "B-LOCderiv", "I-LOCderiv"]
    assert evaluate.main(["--model", str(out / "g"), "--data-dir", str(data), "--tag-column", "3"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{data / 'dev.tsv'}:8: tag 'B-LOCderiv' is not in the model's labels" in message


def test_two_tag_columns_that_do_not_nest_are_refused_with_the_flag(tmp_path):
    path = write(tmp_path / "train.tsv", "1\tParis\tB-LOC\tB-GPE\n2\tund\tO\tO\n3\tBerlin\tB-LOC\tO\n\n"
                 "1\tBach\tO\tB-PER\n")  # fmt: skip
    assert refusal(read_conll, path) == (
        f"{path}: 2 columns hold tags: column 2 (LOC), column 3 (GPE, PER) (not nested: line 5 has B-PER in column 3 "
        "where column 2 has O); pass --tag-column 2 or --tag-column 3 (0-based) to say which holds the entities to "
        "train on"
    )
    assert read_conll(path, ReadOptions(tag_column="3"))[1] == {"tokens": ["Bach"], "tags": ["B-PER"], "line": 5}
    assert read_conll(path, ReadOptions(tag_column="-2"))[0]["tags"] == ["B-LOC", "O", "B-LOC"]


def test_coarse_and_fine_types_on_the_same_words_are_refused(tmp_path):
    path = write(tmp_path / "train.conll", "Paris\tB-LOC\tB-CITY\nliegt\tO\tO\n")
    message = refusal(read_conll, path)
    assert "2 columns hold tags: column 1 (LOC), column 2 (CITY)" in message
    assert "pass --tag-column 1 or --tag-column 2" in message


def test_conll2003_chunk_tags_are_set_aside(tmp_path, caplog):
    path = write(tmp_path / "eng.train", "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n. . O O\n")
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        assert read_conll(path)[0]["tags"] == ["I-ORG", "O", "I-MISC", "O"]  # IOB1 without a B-: as written
    assert layout_log(caplog, path) == [
        f"{path}: 4 columns; words from column 0, tags from column 3; column 2 holds chunk tags (NP, VP), not read"
    ]


# ---------------------------------------------------------------------------------------------------------------
# CoNLL-U and other published layouts


def test_uner_layout_with_sent_id_and_text_comments():
    sentences = read_split(ASSETS / "uner_layout.iob2")
    assert [s["tokens"] for s in sentences] == [
        ["Angela", "Merkel", "besuchte", "Paris", "."], ["Die", "Deutsche", "Bahn", "fährt", "nach", "Berlin"]
    ]  # fmt: skip
    assert sentences[1]["tags"] == ["O", "B-ORG", "I-ORG", "O", "O", "B-LOC"]


def test_conllu_multiword_tokens_and_empty_nodes_are_not_words(tmp_path, caplog):
    text = (
        "# sent_id = 1\n# text = Er fuhr zum Bahnhof in Köln.\n"
        "1\tEr\ter\tPRON\t_\tO\n2\tfuhr\tfahren\tVERB\t_\tO\n3-4\tzum\t_\t_\t_\tO\n3\tzu\tzu\tADP\t_\tO\n"
        "4\tdem\tder\tDET\t_\tO\n5\tBahnhof\tBahnhof\tNOUN\t_\tO\n5.1\tging\tgehen\tVERB\t_\tO\n"
        "6\tin\tin\tADP\t_\tO\n7\tKöln\tKöln\tPROPN\t_\tB-LOC\n8\t.\t.\tPUNCT\t_\tO\n"
    )
    path = write(tmp_path / "train.conllu", text)
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        (sentence,) = read_split(path)
    assert sentence["tokens"] == ["Er", "fuhr", "zu", "dem", "Bahnhof", "in", "Köln", "."]
    assert sentence["tags"] == ["O"] * 6 + ["B-LOC", "O"]
    (logged,) = layout_log(caplog, path)
    assert logged.endswith("2 comment lines skipped; 2 CoNLL-U multiword-token and empty-node lines skipped")


def test_an_index_counting_on_through_the_file_is_not_the_words(tmp_path):
    path = write(tmp_path / "train.tsv", "1\tParis\tB-LOC\n2\tund\tO\n\n3\tBerlin\tB-LOC\n")
    assert [s["tokens"] for s in read_conll(path)] == [["Paris", "und"], ["Berlin"]]


def test_a_column_of_one_value_is_skipped_for_the_words(tmp_path):
    path = write(tmp_path / "train.tsv", "doc1\tParis\tB-LOC\ndoc1\tund\tO\ndoc1\tBerlin\tB-LOC\n")
    assert read_conll(path)[0]["tokens"] == ["Paris", "und", "Berlin"]


def test_a_header_line_names_the_columns(tmp_path, caplog):
    path = write(tmp_path / "train.tsv", "word\tpos\tner\nParis\tNE\tB-LOC\nliegt\tVVFIN\tO\n\nBach\tNE\tB-PER\n")
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        sentences = read_conll(path)
    assert sentences == [
        {"tokens": ["Paris", "liegt"], "tags": ["B-LOC", "O"], "line": 2},
        {"tokens": ["Bach"], "tags": ["B-PER"], "line": 5},
    ]
    assert layout_log(caplog, path) == [
        f"{path}: 3 columns; words from column 0 (word), tags from column 2 (ner); line 1 names the columns "
        "(word, pos, ner)"
    ]
    assert read_conll(path, ReadOptions(token_column="pos", tag_column="NER"))[0]["tokens"] == ["NE", "VVFIN"]
    assert refusal(read_conll, path, ReadOptions(tag_column="label")) == (
        f"--tag-column label: {path} names its columns word, pos, ner; pass one of them"
    )


def test_conllu_plus_global_columns_name_the_columns(tmp_path):
    path = write(tmp_path / "train.conllu", "# global.columns = ID FORM NER\n1\tParis\tB-LOC\n2\tliegt\tO\n")
    assert read_conll(path, ReadOptions(token_column="form", tag_column="ner"))[0]["tokens"] == ["Paris", "liegt"]
    assert read_conll(path)[0]["tokens"] == ["Paris", "liegt"]


def test_a_bad_first_line_is_not_taken_for_a_header(tmp_path):
    path = write(tmp_path / "train.conll", "Angela\tPER\nMerkel\tI-PER\n")
    assert refusal(read_conll, path).startswith(f"{path}:1: tag 'PER' is not IOB2")


# ---------------------------------------------------------------------------------------------------------------
# Column flags: refusals


@pytest.mark.parametrize(
    "options, expected",
    [
        (ReadOptions(tag_column="5"), "--tag-column 5: {path} has lines of 3 columns (0 to 2, or -3 to -1); pass a "
         "column every line has"),
        (ReadOptions(token_column="form"), "--token-column form: {path} has no header line naming its columns; pass "
         "a 0-based column number (its lines have 3 columns)"),
        (ReadOptions(token_column="2", tag_column="-1"), "--token-column 2 and --tag-column -1: both name column 2 "
         "of {path}; the words and the tags are two columns"),
    ],
)  # fmt: skip
def test_column_flags_that_cannot_apply_are_refused(options, expected, tmp_path):
    path = write(tmp_path / "train.conll", "Paris\tNE\tB-LOC\nliegt\tV\tO\n")
    assert refusal(read_conll, path, options) == expected.format(path=path)


def test_the_same_column_for_words_and_tags_is_refused_at_once():
    assert refusal(ReadOptions, "auto", "1", "1") == (
        "--token-column 1 and --tag-column 1: the same column; the words and the tags are two columns"
    )


def test_a_line_missing_the_chosen_column_is_refused_with_its_line(tmp_path):
    path = write(tmp_path / "train.conll", "Paris\tNE\tB-LOC\nliegt\tO\n")
    assert refusal(read_conll, path, ReadOptions(token_column="0", tag_column="2")) == (
        f"{path}:2: the line has 2 columns, none at 2 (--tag-column); give every line the same columns"
    )


def test_no_tag_column_in_a_wide_file_points_at_the_flag(tmp_path):
    path = write(tmp_path / "train.conllu", "1\tParis\tParis\tPROPN\t_\t_\n2\tliegt\tliegen\tVERB\t_\tNER=O\n")
    assert refusal(read_conll, path) == (
        f"{path}:1: tag '_' is not IOB2; use O, B-<TYPE> or I-<TYPE> (e.g. B-PER), or pass --tag-column if the tags "
        "are in another of its 6 columns"
    )


def test_json_lines_fields_by_name(tmp_path):
    path = write(tmp_path / "train.jsonl", json.dumps({"words": ["Paris"], "ner": ["B-LOC"], "pos": ["NE"]}) + "\n")
    assert read_split(path, ReadOptions(token_column="words", tag_column="ner")) == [
        {"tokens": ["Paris"], "tags": ["B-LOC"], "line": 1}
    ]
    assert refusal(read_split, path, ReadOptions(tag_column="1")) == (
        f"--tag-column 1: {path} holds JSON objects, whose fields have names; pass the field's name "
        "(e.g. --tag-column ner_tags)"
    )
    ids = write(tmp_path / "ids.jsonl", json.dumps({"tokens": ["Paris"], "ner_tags": [5]}) + "\n")
    assert refusal(read_split, ids).startswith(f'{ids}:1: "ner_tags" holds class numbers ([5]); write the tag names')


# ---------------------------------------------------------------------------------------------------------------
# Lines that are not words


def test_lines_of_invisible_characters_are_sentence_breaks_with_a_warning(tmp_path, caplog):
    path = tmp_path / "train.conll"
    path.write_bytes("Paris\tB-LOC\n\ufeff\nBerlin\tB-LOC\n\u200b \t\nRom\tB-LOC\n".encode())
    with caplog.at_level(logging.WARNING, logger="ner_accel.data"):
        sentences = read_conll(path)
    assert [s["tokens"] for s in sentences] == [["Paris"], ["Berlin"], ["Rom"]]
    assert caplog.messages == [
        f"{path}:2: a line of invisible characters only (a stray byte-order mark or zero-width space), read as a "
        "blank line: a sentence break; 2 such lines: 2, 4"
    ]


def test_a_byte_order_mark_inside_the_file_is_dropped_from_the_line(tmp_path, caplog):
    path = tmp_path / "train.conll"
    path.write_bytes("\ufeffParis\tB-LOC\n\n\ufeff-DOCSTART-\tO\n\n\ufeffBerlin\tB-LOC\n".encode())  # cat a b
    with caplog.at_level(logging.WARNING, logger="ner_accel.data"):
        assert [s["tokens"] for s in read_conll(path)] == [["Paris"], ["Berlin"]]
    assert caplog.messages == [
        f"{path}:3: a byte-order mark (U+FEFF) at the start of the line (files joined together?), dropped; 2 such "
        "lines: 3, 5"
    ]


def test_plain_two_column_files_log_only_their_scheme(tmp_path, caplog):
    path = write(tmp_path / "train.conll", "Paris\tB-LOC\nund\tO\n\nBach\tB-PER\n")
    with caplog.at_level(logging.INFO, logger="ner_accel.data"):
        read_conll(path)
    assert caplog.messages == [f"{path}: tags read as IOB2"]


def test_no_column_left_for_the_words_is_refused(tmp_path):
    path = write(tmp_path / "train.tsv", "1\tB-LOC\tO\n2\tO\tO\n\n1\tB-PER\tO\n")
    assert refusal(read_conll, path) == (
        f"{path}: no column holds the words (of its 3 columns, column 0, column 1, column 2 hold an index or tags); "
        "pass --token-column"
    )
    assert read_conll(path, ReadOptions(token_column="0", tag_column="1"))[0]["tokens"] == ["1", "2"]


def test_an_empty_column_flag_is_refused():
    assert refusal(ReadOptions, "auto", " ") == "--token-column: empty; pass a 0-based column number or a header name"


def test_a_block_of_comments_alone_does_not_hide_the_index(tmp_path):
    path = write(tmp_path / "train.conllu", "# newdoc id = a\n\n# sent_id = 1\n1\tParis\tB-LOC\n2\tliegt\tO\n")
    assert read_conll(path) == [{"tokens": ["Paris", "liegt"], "tags": ["B-LOC", "O"], "line": 4}]
