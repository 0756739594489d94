"""Bad input: one line naming the file/line/option and the fix, exit code 2, nothing written."""

import json
import logging

import pytest

from ner_accel.data.corpus import CorpusOptions, count_bad_starts, load_corpus
from tests.conftest import TRAIN, VALIDATION, run_training


def attempt(capsys, tmp_path, model, data, *extra) -> str:
    """Run the CLI expecting a clean refusal; return its one-line message."""
    out = tmp_path / "out"
    code = run_training(["--model", model, "--data-dir", data, "--output-dir", out, *extra])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2, message
    assert message.startswith("error: ")
    assert not out.exists(), "a refused run must not create its output directory"
    return message


def write(directory, train=TRAIN, validation=VALIDATION, suffix=".conll"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"train{suffix}").write_text(train, encoding="utf-8")
    (directory / f"validation{suffix}").write_text(validation, encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "nowhere", ["nowhere", "directory not found", "--data-dir"]),
        (lambda d: (d / "data").mkdir() or d / "data", ["no train file", "add train.conll"]),
        (lambda d: write(d / "data", train="\n\n"), ["train.conll", "empty"]),
        (lambda d: write(d / "data", train="Angela\tB-PER\nMerkel\n"), ["train.conll:2", "one column", "tag column"]),
        (lambda d: write(d / "data", train="Angela\tPER\n"), ["train.conll:1", "'PER'", "IOB2", "B-PER"]),
        (lambda d: write(d / "data", train="Angela B_PER\n"), ["train.conll:1", "'B_PER'", "IOB2"]),
        (lambda d: write(d / "data", train="Der\tO\nHund\tO\n"), ["train.conll", "no entity, only O tags"]),
        (lambda d: write(d / "data", train="Angela\tB- PER\n"), ["train.conll:1", "'B- PER'", "IOB2"]),
        (lambda d: write(d / "data", train="Angela\tO\u200b\n"), ["train.conll:1", "'O\\u200b'", "IOB2"]),
        (
            lambda d: write(d / "data", train='{"tokens": [null, "b"], "ner_tags": ["B-PER", "O"]}\n', suffix=".jsonl"),
            ["train.jsonl:1", '"tokens" must be a list of strings'],
        ),
        (
            lambda d: write(d / "data", validation="Paris\tB-LOC\n\nApple\tB-MISC\n"),
            ["validation.conll:3", "'B-MISC'", "training data"],
        ),
        (
            lambda d: write(d / "data", train='{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": [\n', suffix=".jsonl"),
            ["train.jsonl:2", "not valid JSON", "one JSON object per line"],
        ),
        (
            lambda d: write(d / "data", train='{"tokens": ["a", "b"], "ner_tags": ["O"]}\n', suffix=".jsonl"),
            ["train.jsonl:1", "2 tokens but 1 ner_tags", "one tag per token"],
        ),
        (
            lambda d: (
                write(d / "data")
                and (d / "data" / "validation.conll").write_bytes(
                    "Paris\tB-LOC\n\nM\u00fcnchen\tB-LOC\n".encode("latin-1")
                )
                and d / "data"
            ),
            ["validation.conll:3", "not UTF-8", "byte 0xfc", "convert the file to UTF-8"],
        ),
    ],
    ids=[
        "missing-dir",
        "missing-split",
        "empty-split",
        "no-tag-column",
        "tag-PER",
        "tag-B_PER",
        "only-O",
        "tag-space-in-type",
        "tag-invisible-char",
        "jsonl-null-token",
        "unknown-eval-tag",
        "jsonl-bad-json",
        "jsonl-length-mismatch",
        "not-utf8",
    ],
)
def test_bad_data_is_refused_with_file_line_and_fix(make, expected, tiny_model, tmp_path, capsys):
    message = attempt(capsys, tmp_path, tiny_model, make(tmp_path))
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--per-device-train-batch-size", "0"], "--per-device-train-batch-size must be a positive integer"),
        (["--num-train-epochs", "-1"], "--num-train-epochs must be a positive integer"),
        (["--mixed-precision", "fp16"], "fp16 needs a CUDA GPU"),
        (["--resume", "/tmp"], "not a ner_accel checkpoint"),
        (["--warmup-steps", "-5"], "--warmup-steps must not be negative, got -5"),
        (["--dataloader-num-workers", "-1"], "--dataloader-num-workers must not be negative"),
    ],
)
def test_bad_options_are_refused(flags, expected, tiny_model, conll_dir, tmp_path, capsys):
    assert expected in attempt(capsys, tmp_path, tiny_model, conll_dir, *flags)


def test_missing_model_path(conll_dir, tmp_path, capsys):
    message = attempt(capsys, tmp_path, tmp_path / "no-such-model", conll_dir)
    assert "--model" in message and "not found" in message


def test_config_file_with_unknown_key(tiny_model, conll_dir, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("learning-rate: 1e-4\nlearnig_rate: 1e-4\n")
    message = attempt(capsys, tmp_path, tiny_model, conll_dir, "--config", config)
    assert str(config) in message and "unknown key 'learnig_rate'" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("num_train_epochs: 3.5\n", "--num-train-epochs: invalid int value: '3.5'"),
        ("mixed_precision: fp32\n", "invalid choice: 'fp32'"),
        ("num_train_epochs: [1, 2]\n", "num_train_epochs takes a single value"),
        ("learning_rate:\n", "learning_rate is empty"),
    ],
)
def test_config_file_values_are_checked_like_flags(text, expected, tiny_model, conll_dir, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    message = attempt(capsys, tmp_path, tiny_model, conll_dir, "--config", config)
    assert str(config) in message and expected in message


def test_config_file_values_take_the_command_lines_types(tmp_path):
    from ner_accel.options.train_config import parse_config

    config = tmp_path / "run.yaml"
    config.write_text("data_dir: panx/de\nlanguage_fractions: 0.5\ngroup_by_length: false\neval_steps: null\n")
    parsed = parse_config(["--config", str(config)])
    assert (parsed.data_dir, parsed.language_fractions, parsed.group_by_length) == (["panx/de"], [0.5], False)
    assert parsed.eval_steps is None


def test_config_file_values_apply_and_flags_win(tiny_model, conll_dir, tmp_path):
    from ner_accel.options.train_config import parse_config

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"learning_rate": 1e-4, "num-train-epochs": 7}))
    parsed = parse_config(["--config", str(config), "--num-train-epochs", "2"])
    assert (parsed.learning_rate, parsed.num_train_epochs) == (1e-4, 2)


def test_finished_run_is_not_overwritten_without_flag(tiny_model, conll_dir, tmp_path, capsys):
    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path / "out", "--run-name", "r"]
    assert run_training([*args, "--num-train-epochs", "1"]) == 0
    before = (tmp_path / "out" / "r" / "model" / "model.safetensors").read_bytes()
    assert run_training([*args, "--num-train-epochs", "1", "--learning-rate", "1e-3"]) == 2
    assert "already holds a finished run; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out" / "r" / "model" / "model.safetensors").read_bytes() == before
    assert run_training([*args, "--num-train-epochs", "1", "--learning-rate", "1e-3", "--overwrite"]) == 0
    assert (tmp_path / "out" / "r" / "model" / "model.safetensors").read_bytes() != before


def test_resume_with_a_different_label_set_is_refused(tiny_model, conll_dir, tmp_path, capsys):
    args = ["--model", tiny_model, "--output-dir", tmp_path / "first", "--run-name", "r", "--num-train-epochs", "1"]
    assert run_training([*args, "--data-dir", conll_dir]) == 0
    checkpoint = next((tmp_path / "first" / "r" / "checkpoints").glob("step-*"))
    other = write(
        tmp_path / "other",
        train=TRAIN.replace("B-ORG", "B-MISC").replace("I-ORG", "I-MISC"),
        validation=VALIDATION.replace("B-ORG", "B-MISC"),
    )
    message = attempt(capsys, tmp_path, tiny_model, other, "--resume", checkpoint)
    assert "trained with labels" in message and "B-MISC" in message


@pytest.mark.parametrize(
    "changed, expected",
    [
        (["--per-device-train-batch-size", "3"], "trained with per_device_train_batch_size=8, this command has 3"),
        (["--learning-rate", "1e-3"], "trained with learning_rate=5e-05, this command has 0.001"),
        (["--seed", "1"], "trained with seed=42, this command has 1"),
        (["--layer-lr-decay", "0.8"], "trained with layer_lr_decay=1.0, this command has 0.8"),
        (["--freeze-word-embeddings"], "trained with freeze_word_embeddings=False, this command has True"),
    ],
)
def test_resume_under_other_batches_or_schedule_is_refused(changed, expected, tiny_model, conll_dir, tmp_path, capsys):
    args = ["--model", tiny_model, "--output-dir", tmp_path / "first", "--run-name", "r", "--num-train-epochs", "1"]
    assert run_training([*args, "--data-dir", conll_dir, "--per-device-train-batch-size", "8"]) == 0
    checkpoint = next((tmp_path / "first" / "r" / "checkpoints").glob("step-*"))
    again = ["--per-device-train-batch-size", "8", "--num-train-epochs", "1", "--resume", checkpoint, *changed]
    message = attempt(capsys, tmp_path, tiny_model, conll_dir, *again)
    assert expected in message and "start a new run" in message


def test_two_data_directories_of_one_name_are_refused(tiny_model, tmp_path, capsys):
    first, second = write(tmp_path / "a" / "de"), write(tmp_path / "b" / "de")
    out = tmp_path / "out"
    assert run_training(["--model", tiny_model, "--data-dir", first, second, "--output-dir", out]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(first) in message and str(second) in message and "both are named 'de'" in message
    assert not out.exists()


def test_training_does_not_read_the_test_split(tiny_model, tmp_path):
    """Only `ner_accel.evaluate --split test` reads it: a broken test file must not stop training."""
    data = write(tmp_path / "data")
    (data / "test.conll").write_text("Paris\tLOCATION\n", encoding="utf-8")
    args = ["--model", tiny_model, "--data-dir", data, "--output-dir", tmp_path / "out", "--num-train-epochs", "1"]
    assert run_training(args) == 0


def test_an_output_dir_that_is_a_file_is_refused(tiny_model, conll_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path / "afile", "--run-name", "r"]
    assert run_training(args) == 2
    assert "is a file, not a directory" in capsys.readouterr().err.strip().splitlines()[-1]


def test_i_after_o_is_accepted_and_reported_once(tmp_path, caplog):
    data = write(tmp_path / "data", train="Paris\tI-LOC\nund\tO\nBerlin\tI-LOC\n", validation="Rom\tB-LOC\n")
    assert count_bad_starts([["O", "I-LOC", "I-LOC", "O", "I-PER", "B-ORG", "I-LOC"]]) == 3
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus(CorpusOptions(data_dir=[str(data)]))
    warnings = [r.getMessage() for r in caplog.records if "I- tags follow O" in r.getMessage()]
    assert warnings == ["training data: 2 I- tags follow O or another type; read as entity starts (as seqeval)"]
    assert corpus.labels == ["O", "B-LOC", "I-LOC"]


def test_too_long_sentences_are_reported(tiny_model, tmp_path, caplog):
    from ner_accel.data.encoding import encode_dataset
    from ner_accel.modeling.loading import load_tokenizer

    corpus = load_corpus(CorpusOptions(data_dir=[str(write(tmp_path / "data"))]))
    with caplog.at_level(logging.WARNING):
        encode_dataset(corpus.train, load_tokenizer(str(tiny_model)), corpus.labels, 6, False, "train")
    # by hand: 3 + 4 + 4 + 4 + 2 words of the five training sentences fall past [CLS] + 4 pieces
    (message,) = [r.getMessage() for r in caplog.records if "--max-length" in r.getMessage()]
    assert message.startswith("train: 17 words in 5 sentences have no sub-token within --max-length 6")


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_line_endings_and_a_byte_order_mark_read_like_plain_files(tmp_path, ending):
    from ner_accel.data.readers import read_conll

    path = tmp_path / "train.conll"
    lines = ["Angela\tB-PER", "Merkel\tI-PER", "", "Paris\tB-LOC"]
    path.write_bytes("\ufeff".encode() + ending.join(line.encode() for line in lines) + ending)
    assert read_conll(path) == [
        {"tokens": ["Angela", "Merkel"], "tags": ["B-PER", "I-PER"], "line": 1},
        {"tokens": ["Paris"], "tags": ["B-LOC"], "line": 4},
    ]


def test_comment_lines_and_trailing_whitespace_are_not_tokens(tmp_path):
    from ner_accel.data.readers import read_conll

    path = tmp_path / "train.conll"  # MultiCoNER-style "# id" lines; a "#" token keeps its tag
    path.write_text("# id 1\tdomain=de\nAngela _ _ B-PER\t \n#\tO\n\n# id 2\nParis\tB-LOC\n", encoding="utf-8")
    assert read_conll(path) == [
        {"tokens": ["Angela", "#"], "tags": ["B-PER", "O"], "line": 2},
        {"tokens": ["Paris"], "tags": ["B-LOC"], "line": 6},
    ]
