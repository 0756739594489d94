"""Word tags from the model's word-level label probabilities: each word's most probable tag (argmax), or the most
probable tag sequence that IOB2 allows (viterbi: no I-X after O or after another type), with no new parameters."""

from __future__ import annotations

import numpy as np

DECODINGS = ("argmax", "viterbi")
# The default of validation, evaluate and predict: it wins over argmax on every language and seed measured, by 0.014
# to 0.056 F1 (BENCHMARKS.md, "Decoding"), and never yields a tag sequence IOB2 forbids.
DEFAULT_DECODING = "viterbi"


def allowed_transitions(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(start, transition) masks of IOB2: a sentence may not start with I-X, and I-X may follow only B-X or I-X."""
    kinds = [label[2:] if label[:2] in ("B-", "I-") else None for label in labels]
    inside = np.array([label.startswith("I-") for label in labels])
    same_type = np.array([[kinds[i] is not None and kinds[i] == kinds[j] for j in range(len(labels))]
                          for i in range(len(labels))])  # fmt: skip
    transition = ~inside[None, :] | same_type  # [previous, next]
    return ~inside, transition


def viterbi(log_probabilities: np.ndarray, labels: list[str]) -> np.ndarray:
    """The label ids of the best IOB2-valid path through (words, labels) log-probabilities."""
    if len(log_probabilities) == 0:
        return np.zeros(0, dtype=np.int64)
    start, transition = allowed_transitions(labels)
    penalty = np.where(transition, 0.0, -np.inf)
    score = np.where(start, log_probabilities[0], -np.inf)
    back = np.zeros(log_probabilities.shape, dtype=np.int64)
    for word in range(1, len(log_probabilities)):
        candidates = score[:, None] + penalty  # [previous, next]
        back[word] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_probabilities[word]
    path = [int(score.argmax())]
    for word in range(len(log_probabilities) - 1, 0, -1):
        path.append(int(back[word, path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def decode(log_probabilities: np.ndarray, labels: list[str], method: str = DEFAULT_DECODING) -> np.ndarray:
    """Label ids for each word (row) of one text's (words, labels) log-probabilities."""
    if method == "viterbi":
        return viterbi(log_probabilities, labels)
    if method != "argmax":
        raise ValueError(f"unknown decoding {method!r}; one of {DECODINGS}")
    return log_probabilities.argmax(axis=-1) if len(log_probabilities) else np.zeros(0, dtype=np.int64)
