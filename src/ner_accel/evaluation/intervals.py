"""How sure an F1 is: 95 % intervals from a seeded bootstrap over sentences, and two systems compared on the same
sentences (paired bootstrap interval of the difference, approximate-randomisation p-value), vectorised.

Entities are matched as seqeval's default mode matches them (the same type and the same words), so the counts summed
over all sentences give seqeval's precision, recall and F1 exactly. Resampling sentences, not entities, keeps the
dependence between entities of one sentence (Koehn 2004; Berg-Kirkpatrick et al. 2012; Dror et al. 2018).
"""

from __future__ import annotations

import numpy as np

from ..inference.entities import extract_entities

RESAMPLES = 1000
SEED = 0


def sentence_counts(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> np.ndarray:
    """(sentences, types, 3): per sentence and entity type, correct, predicted and gold entities."""
    index = {kind: i for i, kind in enumerate(types)}
    counts = np.zeros((len(gold), len(types), 3), dtype=np.int64)
    for row, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        gold_entities, predicted_entities = set(extract_entities(gold_tags)), set(extract_entities(predicted_tags))
        for entities, column in ((gold_entities & predicted_entities, 0), (predicted_entities, 1), (gold_entities, 2)):
            for kind, _, _ in entities:
                counts[row, index[kind], column] += 1
    return counts


def f1_of(totals: np.ndarray) -> np.ndarray:
    """F1 from (..., 3) totals of correct, predicted and gold entities (0 where there are none)."""
    correct, predicted, gold = totals[..., 0], totals[..., 1], totals[..., 2]
    denominator = predicted + gold
    return np.divide(2.0 * correct, denominator, out=np.zeros(correct.shape), where=denominator > 0)


def resample_weights(sentences: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, sentences): how often each sentence is drawn in each bootstrap sample (with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sentences, size=(resamples, sentences))
    offsets = (np.arange(resamples)[:, None] * sentences + draws).ravel()
    return np.bincount(offsets, minlength=resamples * sentences).reshape(resamples, sentences).astype(np.float64)


def bootstrap_intervals(counts: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """95 % percentile intervals of the overall and per-type F1 over sentence resamples."""
    if len(counts) == 0:
        return {"overall": [0.0, 0.0], "per_type": [[0.0, 0.0]] * counts.shape[1]}
    weights = resample_weights(len(counts), resamples, seed)
    per_type = np.einsum("rs,stc->rtc", weights, counts.astype(np.float64))  # (resamples, types, 3)
    overall = f1_of(per_type.sum(axis=1))
    low, high = np.percentile(f1_of(per_type), [2.5, 97.5], axis=0)
    return {
        "overall": [float(v) for v in np.percentile(overall, [2.5, 97.5])],
        "per_type": [[float(a), float(b)] for a, b in zip(low, high)],
    }


def paired_comparison(
    gold: list[list[str]],
    first: list[list[str]],
    second: list[list[str]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict:
    """F1 of two systems' tags on the same sentences, the difference (second - first) with its 95 % paired
    bootstrap interval, and the two-sided approximate-randomisation p-value (each sentence's pair of outputs swapped
    with probability 1/2; p = (swaps at least as different + 1) / (resamples + 1))."""
    types = sorted({kind for tags in (*gold, *first, *second) for kind, _, _ in extract_entities(tags)})
    a = sentence_counts(gold, first, types).sum(axis=1)  # (sentences, 3): overall counts
    b = sentence_counts(gold, second, types).sum(axis=1)
    f1_a, f1_b = f1_of(a.sum(axis=0)), f1_of(b.sum(axis=0))
    difference = float(f1_b - f1_a)
    if len(gold) == 0:
        return {"f1_first": 0.0, "f1_second": 0.0, "difference": 0.0, "interval": [0.0, 0.0], "p_value": 1.0}
    weights = resample_weights(len(gold), resamples, seed)
    boot = f1_of(weights @ b) - f1_of(weights @ a)
    swap = np.random.default_rng(seed + 1).integers(0, 2, size=(resamples, len(gold))).astype(np.float64)
    shuffled_a = a.sum(axis=0) + swap @ (b - a)  # each swapped sentence moves its counts from b to a
    shuffled_b = b.sum(axis=0) - swap @ (b - a)
    extreme = np.abs(f1_of(shuffled_b) - f1_of(shuffled_a)) >= abs(difference) - 1e-12
    return {
        "f1_first": float(f1_a),
        "f1_second": float(f1_b),
        "difference": difference,
        "interval": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
        "p_value": float((extreme.sum() + 1) / (resamples + 1)),
        "resamples": resamples,
        "sentences": len(gold),
    }
