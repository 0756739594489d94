"""A tiny model trained end to end: the files a run writes, loss falling, a model plain transformers can use."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from ner_accel.modeling.trained_rows import with_full_embedding
from tests.conftest import run_training


def tiny_args(model, data, out, *extra):
    return [
        "--model",
        model,
        "--data-dir",
        data,
        "--output-dir",
        out,
        "--run-name",
        "run",
        "--per-device-train-batch-size",
        "2",
        "--per-device-eval-batch-size",
        "2",
        "--logging-steps",
        "1",
        *extra,
    ]


def test_run_writes_exactly_these_files(tiny_model, conll_dir, tmp_path):
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "2")) == 0
    run = tmp_path / "run"
    written = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert written == [
        "checkpoints/latest",  # the two newest checkpoints (--keep-checkpoints 2: one to fall back on; no best)
        "checkpoints/step-0000003/model.safetensors",
        "checkpoints/step-0000003/optimizer.bin",
        "checkpoints/step-0000003/random_states_0.pkl",
        "checkpoints/step-0000003/scheduler.bin",
        "checkpoints/step-0000003/trainer_state.json",
        "checkpoints/step-0000006/model.safetensors",
        "checkpoints/step-0000006/optimizer.bin",
        "checkpoints/step-0000006/random_states_0.pkl",
        "checkpoints/step-0000006/scheduler.bin",
        "checkpoints/step-0000006/trainer_state.json",
        "metrics.json",
        "model/README.md",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
        "report.html",
        "report.txt",
        "train_config.json",
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    evaluations = [e for e in metrics["evaluations"] if "validation" in e]
    assert [e["epoch"] for e in evaluations] == [1, 2]
    assert set(metrics["final"]["data"]) >= {"precision", "recall", "f1", "support", "per_type"}
    assert metrics["final"]["data"]["support"] == 6  # 6 gold entities in the validation file
    config = json.loads((run / "train_config.json").read_text())
    assert config["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert config["per_device_train_batch_size"] == 2
    assert "overall" in (run / "report.txt").read_text()


def test_loss_falls_when_overfitting_one_batch(tiny_model_no_dropout, conll_dir, tmp_path):
    args = tiny_args(
        tiny_model_no_dropout,
        conll_dir,
        tmp_path,
        "--num-train-epochs",
        "30",
        "--max-train-samples",
        "2",
        "--learning-rate",
        "1e-2",
        "--eval-steps",
        "1000",
    )
    assert run_training(args) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluations"]
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 30
    assert losses[-1] < 0.1 * losses[0], losses
    assert len([e for e in history if "validation" in e]) == 1  # the unevaluated end still gets its evaluation


def test_saved_model_loads_in_plain_transformers_with_the_same_logits(tiny_model, conll_dir, tmp_path):
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "1")) == 0
    model_dir = tmp_path / "run" / "model"
    plain = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    assert type(plain).__module__.startswith("transformers.")  # no ner_accel class involved
    ours = __import__("ner_accel.modeling.heads", fromlist=["BertForTokenClassification"]).BertForTokenClassification
    ours = ours.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer([["Merkel", "besuchte", "Leipzig"]], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, ours(**batch).logits, rtol=0, atol=0)
    weights = load_file(model_dir / "model.safetensors")
    assert {k for k in weights if k.startswith("classifier.")} == {"classifier.weight", "classifier.bias"}
    tagger = pipeline("token-classification", model=str(model_dir), aggregation_strategy="first")
    assert isinstance(tagger("Merkel besuchte Leipzig"), list)
    assert plain.config.id2label[5] == "B-PER"


def test_unpadded_and_padded_attention_train_the_same_model(tiny_model_no_dropout, conll_dir, tmp_path):
    """The whole loop, twice: --attention sdpa (transformers' padded model) and the default unpadded forward."""
    args = ["--num-train-epochs", "3", "--learning-rate", "1e-3"]
    assert run_training(tiny_args(tiny_model_no_dropout, conll_dir, tmp_path / "unpadded", *args)) == 0
    assert (
        run_training(tiny_args(tiny_model_no_dropout, conll_dir, tmp_path / "padded", *args, "--attention", "sdpa"))
        == 0
    )
    unpadded = load_file(tmp_path / "unpadded" / "run" / "model" / "model.safetensors")
    padded = load_file(tmp_path / "padded" / "run" / "model" / "model.safetensors")
    assert unpadded.keys() == padded.keys()
    for name in unpadded:
        torch.testing.assert_close(unpadded[name], padded[name], rtol=1e-4, atol=1e-5, msg=name)
    history = [json.loads((tmp_path / d / "run" / "metrics.json").read_text()) for d in ("unpadded", "padded")]
    assert history[0]["final"] == history[1]["final"]
    config = json.loads((tmp_path / "padded" / "run" / "train_config.json").read_text())
    assert config["attention"] == "sdpa"


def test_unknown_attention_is_refused(tiny_model, conll_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal of a value outside the choices
        run_training(tiny_args(tiny_model, conll_dir, tmp_path, "--attention", "fast"))
    assert exit_info.value.code == 2
    assert "argument --attention: invalid choice: 'fast'" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "run").exists()


def evaluated_steps(run) -> list[int]:
    metrics = json.loads((run / "metrics.json").read_text())
    return [e["step"] for e in metrics["evaluations"] if "validation" in e]


def test_patience_stops_at_the_evaluation_that_ran_out(tiny_model, conll_dir, tmp_path):
    """A learning rate too small to change a prediction: F1 never improves after the first evaluation, so with
    --patience 1 the run stops at the second epoch's end, without taking another step."""
    args = ["--num-train-epochs", "4", "--learning-rate", "1e-12", "--patience", "1"]
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, *args)) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert evaluated_steps(tmp_path / "run") == [3, 6]  # 3 steps an epoch; epoch 2 ran out of patience
    assert max(e["step"] for e in metrics["evaluations"]) == 6
    assert metrics["final"] == metrics["evaluations"][-1]["validation"]


def test_load_best_saves_the_best_evaluated_weights(tiny_model, conll_dir, tmp_path):
    args = ["--num-train-epochs", "3", "--learning-rate", "1e-3", "--eval-steps", "1", "--load-best"]
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, *args)) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    evaluations = [e for e in metrics["evaluations"] if "validation" in e]
    best = max(evaluations, key=lambda e: e["validation"]["data"]["f1"])  # the first of equal F1s, as training keeps
    assert (run / "checkpoints" / "best").read_text().strip() == f"step-{best['step']:07d}"
    assert metrics["final"] == best["validation"]
    saved = load_file(run / "model" / "model.safetensors")
    # A checkpoint keeps the trained embedding rows apart; the saved model has them back in the full matrix.
    # (its fixed full matrix is --model's, left out of the checkpoint).
    at_best = load_file(run / "checkpoints" / f"step-{best['step']:07d}" / "model.safetensors")
    embedding = "bert.embeddings.word_embeddings.weight"
    at_best = with_full_embedding({**at_best, embedding: load_file(tiny_model / "model.safetensors")[embedding]})
    assert saved.keys() == at_best.keys() and all(torch.equal(saved[k], at_best[k]) for k in saved)


def test_steps_after_the_last_evaluation_are_evaluated_and_checkpointed(tiny_model, conll_dir, tmp_path):
    args = ["--num-train-epochs", "2", "--eval-steps", "4", "--load-best"]
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, *args)) == 0
    assert evaluated_steps(tmp_path / "run") == [4, 6]
    assert (tmp_path / "run" / "checkpoints" / "step-0000006" / "trainer_state.json").is_file()


def test_overwrite_replaces_an_earlier_runs_checkpoints(tiny_model, conll_dir, tmp_path):
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "2")) == 0
    assert run_training(tiny_args(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "1", "--overwrite")) == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-0000003"]
    assert (checkpoints / "latest").read_text().strip() == "step-0000003"
