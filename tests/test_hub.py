"""The Hub code paths, exercised offline: a local copy in the Hub's layout, and failing fast without a network."""

import json
import time

from datasets import ClassLabel, Dataset, Features, Sequence, Value
from transformers import ByT5Tokenizer

from ner_accel.data.corpus import CorpusOptions, load_corpus
from tests.conftest import run_training

PANX_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def write_hub_copy(root):
    """google/xtreme's layout: PAN-X.<lang>/<split>-00000-of-00001.parquet with ClassLabel tags."""
    features = Features(
        {
            "tokens": Sequence(Value("string")),
            "ner_tags": Sequence(ClassLabel(names=PANX_NAMES)),
            "langs": Sequence(Value("string")),
        }
    )
    rows = {
        "train": [
            (["Angela", "Merkel", "besuchte", "Paris"], [1, 2, 0, 5]),
            (["Die", "Bahn", "fährt"], [0, 3, 0]),
            (["Bach", "lebte", "in", "Leipzig"], [1, 0, 0, 5]),
        ],
        "validation": [(["Merkel", "fährt", "nach", "Leipzig"], [1, 0, 0, 5]), (["Die", "Bahn"], [0, 3])],
        "test": [(["Paris", "und", "Berlin"], [5, 0, 5])],
    }
    for split, sentences in rows.items():
        data = {
            "tokens": [t for t, _ in sentences],
            "ner_tags": [g for _, g in sentences],
            "langs": [["de"] * len(t) for t, _ in sentences],
        }
        (root / "PAN-X.de").mkdir(parents=True, exist_ok=True)
        Dataset.from_dict(data, features=features).to_parquet(root / "PAN-X.de" / f"{split}-00000-of-00001.parquet")
    return root


def test_local_copy_in_hub_layout_loads_with_classlabel_names(tmp_path):
    corpus = load_corpus(CorpusOptions(dataset=str(write_hub_copy(tmp_path / "xtreme")), languages=["de"]))
    assert corpus.labels == PANX_NAMES  # the ClassLabel order, as the seed's tags.names
    assert corpus.train["tags"][0] == ["B-PER", "I-PER", "O", "B-LOC"]
    assert list(corpus.validation) == ["de"]
    assert corpus.validation["de"]["tokens"] == [["Merkel", "fährt", "nach", "Leipzig"], ["Die", "Bahn"]]


def test_training_through_the_hub_path(tiny_model, tmp_path):
    hub = write_hub_copy(tmp_path / "xtreme")
    out = tmp_path / "out"
    assert (
        run_training(
            [
                "--model",
                tiny_model,
                "--dataset",
                hub,
                "--languages",
                "de",
                "--output-dir",
                out,
                "--num-train-epochs",
                "1",
                "--per-device-train-batch-size",
                "2",
            ]
        )
        == 0
    )
    (run,) = out.iterdir()
    assert run.name == "tiny-model0-finetuned-panx-de"  # the seed's <model>-finetuned-panx-<lang>
    assert json.loads((run / "train_config.json").read_text())["labels"] == PANX_NAMES


def test_unreachable_hub_fails_within_seconds_and_says_what_to_pass(tiny_model, tmp_path, capsys):
    started = time.time()
    code = run_training(["--model", tiny_model, "--languages", "de", "--output-dir", tmp_path / "out"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert time.time() - started < 20
    assert code == 2
    assert "cannot reach the Hugging Face Hub" in message and "--data-dir" in message
    started = time.time()
    code = run_training(["--model", "xlm-roberta-base", "--data-dir", tmp_path, "--output-dir", tmp_path / "out"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert time.time() - started < 20
    assert code == 2 and "--model <local model directory>" in message
    assert not (tmp_path / "out").exists()


def test_slow_tokenizer_is_refused(tiny_model, conll_dir, tmp_path, capsys):
    model = tmp_path / "slow-model"
    model.mkdir()
    (model / "config.json").write_text((tiny_model / "config.json").read_text())
    ByT5Tokenizer().save_pretrained(model)
    code = run_training(["--model", model, "--data-dir", conll_dir, "--output-dir", tmp_path / "out"])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "slow (Python) tokenizer" in message and "tokenizer.json" in message
