"""Entity-level scores on hand-made tag sequences, computed by hand."""

import pytest

from ner_accel.metrics import entity_metrics


def test_exact_precision_recall_f1_and_per_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O", "B-PER"]]
    # gold entities: PER(0-1), LOC(3), ORG(0-1), PER(3) = 4; predicted: PER(0-1), ORG(3), ORG(0), PER(3) = 4
    # correct: PER(0-1), PER(3) = 2 -> P = 2/4, R = 2/4, F1 = 0.5
    metrics = entity_metrics(gold, pred)
    assert metrics["precision"] == pytest.approx(0.5)
    assert metrics["recall"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx(0.5)
    assert metrics["support"] == 4
    assert metrics["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert metrics["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["per_type"]["ORG"]["support"] == 1
    assert metrics["per_type"]["ORG"]["precision"] == 0.0


def test_an_entity_counts_only_when_every_word_is_right():
    metrics = entity_metrics([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0)


def test_i_after_o_is_read_as_a_start_like_seqeval_default():
    metrics = entity_metrics([["O", "I-LOC", "O"]], [["O", "B-LOC", "O"]])
    assert metrics["f1"] == 1.0
