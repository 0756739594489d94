"""Only the word-embedding rows the training data uses are trained (modeling/trained_rows.py): the lookup equals the
full matrix's, untrained rows keep their pretrained values exactly, AdamW and checkpoints hold the trained rows only,
and the saved model is the plain transformers model with the full matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ner_accel.data.encoding import encode_dataset
from ner_accel.data.readers import read_conll
from ner_accel.modeling.loading import load_tokenizer
from ner_accel.modeling.trained_rows import EmbeddingWithTrainedRows, train_only_used_rows, with_full_embedding
from tests.conftest import run_training

# .ci/run also runs these on the AVX2 bf16 kernels of a CPU with native bf16 (they round differently).
pytestmark = pytest.mark.numerics

EMBEDDING = "bert.embeddings.word_embeddings"


def test_lookup_equals_the_full_matrix_and_only_the_rows_learn():
    torch.manual_seed(0)
    plain = nn.Embedding(20, 4, padding_idx=0)
    rows = torch.tensor([9, 2, 5, 17])  # unsorted on purpose
    embedding = EmbeddingWithTrainedRows(plain, rows)
    ids = torch.tensor([[0, 2, 3, 9], [19, 17, 5, 5]])  # trained, untrained, padding, first and last rows
    torch.testing.assert_close(embedding(ids), plain(ids), rtol=0, atol=0)
    assert embedding.rows.tolist() == [2, 5, 9, 17] and not embedding.weight.requires_grad
    embedding(ids).sum().backward()
    # One gradient row per trained row, counted as often as it is looked up; nothing for the fixed matrix.
    assert embedding.weight.grad is None
    assert embedding.trained_rows.grad[:, 0].tolist() == [1.0, 2.0, 1.0, 1.0]
    with torch.no_grad():
        embedding.trained_rows += 1.0
    merged = with_full_embedding({f"e.{k}": v for k, v in embedding.state_dict().items()})
    assert set(merged) == {"e.weight"}
    expected = plain.weight.detach().clone()
    expected[[2, 5, 9, 17]] += 1.0
    torch.testing.assert_close(merged["e.weight"], expected, rtol=0, atol=0)
    torch.testing.assert_close(embedding(ids), nn.functional.embedding(ids, expected), rtol=0, atol=0)


def test_the_rows_are_the_training_datas_without_padding(tiny_model, conll_dir):
    from transformers import AutoModelForTokenClassification

    tokenizer = load_tokenizer(str(tiny_model))
    model = AutoModelForTokenClassification.from_pretrained(tiny_model)
    from datasets import Dataset

    sentences = read_conll(conll_dir / "train.conll")
    words = Dataset.from_dict({"tokens": [s["tokens"] for s in sentences], "tags": [s["tags"] for s in sentences]})
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    rows = encode_dataset(words, tokenizer, labels, 64, False, "train")
    used = np.unique(np.concatenate([*rows["input_ids"], [tokenizer.pad_token_id]]))
    assert train_only_used_rows(model, used) == len(used) - 1
    embedding = model.get_input_embeddings()
    assert tokenizer.pad_token_id not in embedding.rows.tolist()
    assert sorted(embedding.rows.tolist()) == sorted(set(used.tolist()) - {tokenizer.pad_token_id})
    trainable = [name for name, p in model.named_parameters() if p.requires_grad and "embeddings" in name]
    assert "bert.embeddings.word_embeddings.trained_rows" in trainable
    assert "bert.embeddings.word_embeddings.weight" not in trainable


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory):
    from tests.conftest import TRAIN, VALIDATION

    root = tmp_path_factory.mktemp("rows")
    data = root / "data"
    data.mkdir()
    (data / "train.conll").write_text(TRAIN, encoding="utf-8")
    (data / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(root / "cache"))
        argv = ["--model", tiny_model, "--data-dir", data, "--output-dir", root, "--run-name", "run",
                "--num-train-epochs", "2", "--learning-rate", "1e-2", "--per-device-train-batch-size", "2"]  # fmt: skip
        assert run_training(argv) == 0
    return root / "run"


def test_untrained_rows_keep_their_pretrained_values_exactly(trained_run, tiny_model):
    before = load_file(tiny_model / "model.safetensors")[f"{EMBEDDING}.weight"]
    after = load_file(trained_run / "model" / "model.safetensors")[f"{EMBEDDING}.weight"]
    checkpoint = load_file(sorted((trained_run / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
    rows = checkpoint[f"{EMBEDDING}.rows"]
    untrained = torch.ones(len(before), dtype=torch.bool)
    untrained[rows] = False
    assert untrained.any() and not untrained.all()
    assert torch.equal(after[untrained], before[untrained])  # no weight decay, no update: bit for bit
    assert (after[rows] != before[rows]).any(dim=1).all()  # every trained row moved (it is looked up every epoch)


def test_adamw_and_checkpoints_hold_the_trained_rows_only(trained_run, tiny_model):
    checkpoint = sorted((trained_run / "checkpoints").glob("step-*"))[-1]
    weights = load_file(checkpoint / "model.safetensors")
    pretrained = load_file(tiny_model / "model.safetensors")[f"{EMBEDDING}.weight"]
    rows, trained = weights[f"{EMBEDDING}.rows"], weights[f"{EMBEDDING}.trained_rows"]
    assert trained.shape == (len(rows), pretrained.shape[1])
    # The fixed full matrix is --model's: the checkpoint keeps its sha256, not its values.
    assert f"{EMBEDDING}.weight" not in weights
    assert set(json.loads((checkpoint / "trainer_state.json").read_text())["frozen"]) == {f"{EMBEDDING}.weight"}
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    shapes = [tuple(state["exp_avg"].shape) for state in optimizer["state"].values()]
    assert tuple(trained.shape) in shapes and not any(shape[0] == len(pretrained) for shape in shapes)
    # The saved model is the plain one: the full matrix, no trained-rows keys, equal to the checkpoint merged.
    saved = load_file(trained_run / "model" / "model.safetensors")
    assert not any(key.endswith((".rows", ".trained_rows")) for key in saved)
    merged = with_full_embedding({**weights, f"{EMBEDDING}.weight": pretrained})
    assert torch.equal(saved[f"{EMBEDDING}.weight"], merged[f"{EMBEDDING}.weight"])
