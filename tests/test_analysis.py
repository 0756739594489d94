"""Error analysis: exact confusion counts, rankings and loss sums; per-word losses agree with the model's loss."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from conftest import TRAIN

from ner_accel.data.alignment import align_predictions
from ner_accel.data.batching import SCORING_INPUTS, make_loader
from ner_accel.data.corpus import to_dataset
from ner_accel.data.encoding import encode_for_scoring
from ner_accel.data.readers import read_conll
from ner_accel.evaluation.analysis import confusion_matrix, error_analysis, loss_by_key, worst_sentences
from ner_accel.evaluation.scoring import EvaluationSet, collect_predictions, score
from ner_accel.inference.windows import Windowing
from ner_accel.modeling.loading import load_model, load_tokenizer
from ner_accel.training.precision import make_accelerator

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
WORDS = [["Anna", "in", "Rom"], ["Bern", "."], ["Jo", "Bo", "lacht"]]
GOLD = [["B-PER", "O", "B-LOC"], ["B-LOC", "O"], ["B-PER", "I-PER", "O"]]
PREDICTED = [["B-PER", "O", "B-PER"], ["B-LOC", "O"], ["B-PER", "B-PER", "I-LOC"]]
LOSSES = [[0.5, 0.25, 2.0], [0.125, 0.0], [0.25, 1.5, 1.0]]


def test_confusion_matrix_exact():
    matrix = confusion_matrix(GOLD, PREDICTED, LABELS)
    expected = [[0] * 5 for _ in LABELS]
    for gold, predicted in [("B-PER", "B-PER"), ("O", "O"), ("B-LOC", "B-PER"), ("B-LOC", "B-LOC"), ("O", "O"),
                            ("B-PER", "B-PER"), ("I-PER", "B-PER"), ("O", "I-LOC")]:  # fmt: skip
        expected[LABELS.index(gold)][LABELS.index(predicted)] += 1
    assert matrix == expected
    assert matrix[0] == [2, 0, 1, 0, 0]
    assert sum(map(sum, matrix)) == 8


def test_worst_sentences_rank_by_summed_loss():
    worst = worst_sentences(WORDS, GOLD, PREDICTED, LOSSES, 2)
    assert [r["index"] for r in worst] == [0, 2]  # equal totals keep file order (stable sort)
    assert worst[1] == {
        "index": 2, "loss": 2.75, "mean_loss": 2.75 / 3, "tokens": ["Jo", "Bo", "lacht"],
        "gold": ["B-PER", "I-PER", "O"], "predicted": ["B-PER", "B-PER", "I-LOC"], "losses": [0.25, 1.5, 1.0],
    }  # fmt: skip
    assert len(worst_sentences(WORDS, GOLD, PREDICTED, LOSSES, 10)) == 3


def test_loss_by_key_sums_and_means():
    words = [["in", "Rom", "in"], ["Rom"]]
    losses = [[1.0, 2.0, 0.5], [1.0]]
    assert loss_by_key(words, losses) == [
        {"key": "Rom", "count": 2, "total_loss": 3.0, "mean_loss": 1.5},
        {"key": "in", "count": 2, "total_loss": 1.5, "mean_loss": 0.75},
    ]
    assert loss_by_key(words, losses, top=1)[0]["key"] == "Rom"
    assert loss_by_key(GOLD, LOSSES)[0] == {"key": "B-LOC", "count": 2, "total_loss": 2.125, "mean_loss": 1.0625}


def test_error_analysis_bundle():
    analysis = error_analysis(WORDS, GOLD, PREDICTED, LOSSES, LABELS, worst=1, top_tokens=2)
    assert analysis["sentence_losses"] == [2.75, 0.125, 2.75]
    assert analysis["mean_word_loss"] == pytest.approx(5.625 / 8)
    assert [r["index"] for r in analysis["worst_sentences"]] == [0]
    assert [row["key"] for row in analysis["tokens"]] == ["Rom", "Bo"]
    assert analysis["labels"] == LABELS


def test_word_losses_agree_with_the_model_loss(tiny_model, tmp_path):
    """The mean of the per-word losses is the model's own (token-averaged) cross-entropy on the same words."""
    path = tmp_path / "train.conll"
    path.write_text(TRAIN, encoding="utf-8")
    sentences = read_conll(path)
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    tokenizer = load_tokenizer(str(tiny_model))
    rows = encode_for_scoring(to_dataset(sentences, "de"), tokenizer, labels, Windowing.of(tokenizer, 64), "de")
    model = load_model(str(tiny_model), labels)
    accelerator = Accelerator(cpu=True)
    loader = make_loader(rows, tokenizer, batch_size=len(sentences), seed=0, train=False, columns=SCORING_INPUTS)
    batch = next(iter(loader))
    model.eval()
    with torch.no_grad():
        expected = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        ).loss
    model, loader = accelerator.prepare(model, loader)
    evaluation = EvaluationSet(loader, [s["tags"] for s in sentences])
    found = collect_predictions(model, evaluation, accelerator, model.config.id2label)
    words = [loss for sentence in found.losses for loss in sentence]
    assert len(words) == sum(len(s["tokens"]) for s in sentences)
    torch.testing.assert_close(torch.tensor(sum(words) / len(words)), expected, rtol=1e-5, atol=1e-6)
    assert [len(g) for g in found.gold] == [len(p) for p in found.predicted] == [len(s) for s in found.losses]
    metrics = score(model, evaluation, accelerator, model.config.id2label)
    assert metrics["sentences"] == len(sentences)


def test_bf16_scoring_casts_the_weights_of_each_pass(tiny_model, tmp_path):
    """A scoring pass runs under one autocast, so each weight is cast to bf16 once per pass: its tags are those of
    forwards that cast afresh, and weights changed between two passes are seen (no cast outlives its pass)."""
    path = tmp_path / "train.conll"
    path.write_text(TRAIN, encoding="utf-8")
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    tokenizer = load_tokenizer(str(tiny_model))
    sentences = read_conll(path)
    rows = encode_for_scoring(to_dataset(sentences, "de"), tokenizer, labels, Windowing.of(tokenizer, 64), "de")
    model, reference = load_model(str(tiny_model), labels), load_model(str(tiny_model), labels)
    accelerator = make_accelerator("bf16")
    loader = make_loader(rows, tokenizer, batch_size=2, seed=0, train=False, columns=SCORING_INPUTS)
    model, loader = accelerator.prepare(model, loader)
    id2label = model.config.id2label
    evaluation = EvaluationSet(loader, [s["tags"] for s in sentences])

    def tags_casting_afresh() -> list[list[str]]:
        reference.load_state_dict(model.state_dict())
        reference.eval()
        tags = {}
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            for batch in loader:
                logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                batch_tags = align_predictions(logits.argmax(-1).numpy(), batch["labels"].numpy(), id2label)[0]
                tags.update(zip(batch["sentence"].tolist(), batch_tags))  # one window a sentence here
        return [tags[sentence] for sentence in sorted(tags)]

    first = collect_predictions(model, evaluation, accelerator, id2label, "argmax").predicted  # as the reference
    assert len(loader) > 1 and first == tags_casting_afresh()
    with torch.no_grad():
        model.classifier.weight.neg_()  # every token's ranking of the labels turns over
    second = collect_predictions(model, evaluation, accelerator, id2label, "argmax").predicted
    assert second != first and second == tags_casting_afresh()
