"""Entity-level scores on hand-made tag sequences, computed by hand."""

import pytest

from ner_accel.evaluation.metrics import entity_metrics


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
    assert metrics["per_type"]["PER"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 2,
        "f1_interval": [1.0, 1.0],
    }
    assert metrics["per_type"]["LOC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "f1_interval": [0.0, 0.0],
    }
    assert metrics["per_type"]["ORG"]["support"] == 1
    assert metrics["per_type"]["ORG"]["precision"] == 0.0


def test_an_entity_counts_only_when_every_word_is_right():
    metrics = entity_metrics([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-PER", "O"]])
    assert (metrics["precision"], metrics["recall"], metrics["f1"]) == (0.0, 0.0, 0.0)


def test_i_after_o_is_read_as_a_start_like_seqeval_default():
    metrics = entity_metrics([["O", "I-LOC", "O"]], [["O", "B-LOC", "O"]])
    assert metrics["f1"] == 1.0


def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entities as seqeval's default mode reads them, written independently: a chunk ends when the next tag is O,
    B-, or of another type; I-X after O or after another type starts a chunk."""
    found, kind, start = set(), None, 0
    for index, tag in enumerate([*tags, "O"]):
        prefix, name = (tag[0], tag[2:]) if tag != "O" else ("O", None)
        if kind is not None and (prefix in ("O", "B") or name != kind):
            found.add((kind, start, index))
            kind = None
        if prefix != "O" and kind is None:
            kind, start = name, index
    return found


def test_random_tag_sequences_match_an_independent_count():
    import random

    rng = random.Random(7)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-MISC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    predicted = [[t if rng.random() < 0.8 else rng.choice(tags) for t in row] for row in gold]
    metrics = entity_metrics(gold, predicted)
    gold_spans = {(i, *s) for i, row in enumerate(gold) for s in spans(row)}
    predicted_spans = {(i, *s) for i, row in enumerate(predicted) for s in spans(row)}
    correct = len(gold_spans & predicted_spans)
    precision, recall = correct / len(predicted_spans), correct / len(gold_spans)
    assert metrics["precision"] == pytest.approx(precision, abs=1e-12)
    assert metrics["recall"] == pytest.approx(recall, abs=1e-12)
    assert metrics["f1"] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-12)
    assert metrics["support"] == len(gold_spans)
    for kind in ("PER", "LOC", "ORG", "MISC"):
        of_kind = {s for s in gold_spans if s[1] == kind}
        hits = len(of_kind & predicted_spans)
        assert metrics["per_type"][kind]["support"] == len(of_kind)
        assert metrics["per_type"][kind]["recall"] == pytest.approx(hits / len(of_kind), abs=1e-12)
