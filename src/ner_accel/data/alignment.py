"""Word labels to sub-token labels (training) and sub-token predictions back to words (evaluation)."""

from __future__ import annotations

import numpy as np

IGNORE = -100


def inside_ids(labels: list[str]) -> list[int]:
    """For each label id, the id to give a word's continuation sub-tokens: B-X becomes I-X, others stay."""
    index = {label: i for i, label in enumerate(labels)}
    return [index.get("I-" + label[2:], i) if label.startswith("B-") else i for i, label in enumerate(labels)]


def align_labels(
    word_ids: list[int | None], word_labels: list[int], label_all_tokens: bool = False, inside: list[int] | None = None
) -> list[int]:
    """The first sub-token of each word carries its label; special tokens and continuations get -100.

    With label_all_tokens, continuations carry the label too, B-X turned into I-X (via `inside`).
    """
    aligned, previous = [], None
    for word in word_ids:
        if word is None:
            aligned.append(IGNORE)
        elif word != previous:
            aligned.append(word_labels[word])
        elif label_all_tokens:
            label = word_labels[word]
            aligned.append(inside[label] if inside is not None else label)
        else:
            aligned.append(IGNORE)
        previous = word
    return aligned


def align_predictions(predictions: np.ndarray, label_ids: np.ndarray, id2label: dict[int, str]):
    """The seed's align_predictions without a Python loop over positions: keep positions whose label is not -100.

    predictions and label_ids are (batch, length) integer arrays (argmax already taken).
    Returns (predicted tag lists, gold tag lists), one list per sentence.
    """
    mask = label_ids != IGNORE
    names = np.array([id2label[i] for i in range(len(id2label))], dtype=object)
    counts = mask.sum(axis=1)
    splits = np.cumsum(counts)[:-1]
    preds = np.split(names[predictions[mask]], splits)
    golds = np.split(names[label_ids[mask]], splits)
    return [p.tolist() for p in preds], [g.tolist() for g in golds]
