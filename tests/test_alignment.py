"""Label alignment to sub-tokens and prediction alignment back to words: exact, hand-written expectations."""

import numpy as np

from ner_accel.data.alignment import IGNORE, align_labels, align_predictions, inside_ids
from ner_accel.data.encoding import encode_batch
from tests.conftest import build_tokenizer

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
L2I = {label: i for i, label in enumerate(LABELS)}


def test_first_subtoken_carries_the_label_and_the_rest_is_ignored():
    # words: 0 split in 3 pieces, 1 whole, 2 split in 2; None = special tokens
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]
    assert align_labels(word_ids, [5, 0, 1]) == [IGNORE, 5, IGNORE, IGNORE, 0, 1, IGNORE, IGNORE]


def test_label_all_tokens_turns_continuations_inside():
    word_ids = [None, 0, 0, 1, 2, 2, None]
    inside = inside_ids(LABELS)
    assert inside == [0, 2, 2, 4, 4, 6, 6]
    assert align_labels(word_ids, [5, 0, 2], True, inside) == [IGNORE, 5, 6, 0, 2, 2, IGNORE]


def test_encode_batch_with_a_real_fast_tokenizer():
    tokenizer = build_tokenizer()
    batch = {
        "tokens": [["Angela", "Merkel", "besuchte", "Paris", "."]],
        "tags": [["B-PER", "I-PER", "O", "B-LOC", "O"]],
    }
    encoded = encode_batch(batch, tokenizer, L2I, max_length=64, label_all_tokens=False)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert pieces == ["[CLS]", "ang", "##ela", "mer", "##kel", "bes", "##uch", "##te", "paris", ".", "[SEP]"]
    assert encoded["labels"][0] == [IGNORE, 5, IGNORE, 6, IGNORE, 0, IGNORE, IGNORE, 1, 0, IGNORE]
    assert encoded["words_lost"] == [0]
    assert encoded["length"] == [11]
    encoded = encode_batch(batch, tokenizer, L2I, max_length=64, label_all_tokens=True)
    assert encoded["labels"][0] == [IGNORE, 5, 6, 6, 6, 0, 0, 0, 1, 0, IGNORE]


def test_truncation_is_counted_not_silent():
    tokenizer = build_tokenizer()
    batch = {
        "tokens": [["Angela", "Merkel", "besuchte", "Paris", "."]],
        "tags": [["B-PER", "I-PER", "O", "B-LOC", "O"]],
    }
    encoded = encode_batch(batch, tokenizer, L2I, max_length=6, label_all_tokens=False)
    # [CLS] ang ##ela mer ##kel [SEP]: "besuchte", "Paris" and "." lose every sub-token.
    assert encoded["labels"][0] == [IGNORE, 5, IGNORE, 6, IGNORE, IGNORE]
    assert encoded["words_lost"] == [3]


def seed_align_predictions(predictions, label_ids, index2tag):
    """The seed recipe's loop, verbatim in logic (argmax already taken)."""
    batch_size, seq_len = predictions.shape
    labels_list, preds_list = [], []
    for batch_idx in range(batch_size):
        example_labels, example_preds = [], []
        for seq_idx in range(seq_len):
            if label_ids[batch_idx, seq_idx] != -100:
                example_labels.append(index2tag[label_ids[batch_idx][seq_idx]])
                example_preds.append(index2tag[predictions[batch_idx][seq_idx]])
        labels_list.append(example_labels)
        preds_list.append(example_preds)
    return preds_list, labels_list


def test_vectorized_alignment_equals_the_seed_loop():
    rng = np.random.default_rng(0)
    id2label = dict(enumerate(LABELS))
    labels = rng.integers(0, len(LABELS), size=(37, 29))
    labels[rng.random(labels.shape) < 0.4] = IGNORE
    labels[3] = IGNORE  # a sentence with no labelled token at all
    predictions = rng.integers(0, len(LABELS), size=labels.shape)
    assert align_predictions(predictions, labels, id2label) == seed_align_predictions(predictions, labels, id2label)
    assert align_predictions(predictions, labels, id2label)[0][3] == []
