"""Score a model on evaluation sets: every gold word of every sentence, tagged through the windows `predict` uses,
predictions gathered across processes, decoded per sentence, seqeval metrics with confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..data.alignment import IGNORE
from ..inference.decoding import DEFAULT_DECODING, decode
from ..inference.entities import fill_unseen
from .metrics import entity_metrics


@dataclass
class EvaluationSet:
    """One evaluation set: the loader of its scoring rows (data/encoding.encode_for_scoring), and every word's
    gold tag, per sentence in file order (the rows only label the words that have a sub-token)."""

    loader: DataLoader
    gold: list[list[str]]


@dataclass
class WordPredictions:
    """Per sentence, in file order: gold and predicted tags and the loss of every word (0 for a word the model does
    not see: it has no sub-token), and each word's label log-probabilities (NaN rows for those)."""

    gold: list[list[str]] = field(default_factory=list)
    predicted: list[list[str]] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)
    log_probabilities: list[np.ndarray] = field(default_factory=list)


@torch.no_grad()
def word_log_probabilities(
    model, loader, accelerator: Accelerator, gold: list[list[str]], num_labels: int, max_batches: int | None = None
) -> dict[int, np.ndarray]:
    """sentence -> (words, labels) log-probabilities at each word's first sub-token in the window it takes its tag
    from (NaN rows: words not scored), for every sentence the loader's rows reach, on every process."""
    model.eval()
    found: dict[int, np.ndarray] = {}
    # The forward's own autocast nests in this one, so its cast cache lives for the whole pass: each weight is cast
    # to half precision once per evaluation, not once per batch (the same bits; 9 % of a bf16 CPU evaluation).
    with accelerator.autocast():
        for batch in islice(loader, max_batches):
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "word_index", "sentence")}
            scores = model(**inputs).logits.float().log_softmax(dim=-1)
            # Processes pad to different lengths: pad to a common one, then gather (dropping duplicated tail rows).
            scores = accelerator.pad_across_processes(scores, dim=1, pad_index=0.0)
            words = accelerator.pad_across_processes(batch["word_index"], dim=1, pad_index=IGNORE)
            scores, words, sentences = accelerator.gather_for_metrics((scores, words, batch["sentence"]))
            scores, words, sentences = scores.cpu().numpy(), words.cpu().numpy(), sentences.cpu().numpy()
            for row, sentence in enumerate(sentences.tolist()):
                if sentence not in found:
                    found[sentence] = np.full((len(gold[sentence]), num_labels), np.nan, dtype=np.float32)
                scored = words[row] != IGNORE
                found[sentence][words[row][scored]] = scores[row][scored]
    if max_batches is not None:
        loader.end()  # a partial pass must not stay registered as the active dataloader
    model.train()
    return found


def collect_predictions(
    model,
    evaluation: EvaluationSet,
    accelerator: Accelerator,
    id2label: dict[int, str],
    decoding: str = DEFAULT_DECODING,
    max_batches: int | None = None,
) -> WordPredictions:
    """Gold and decoded tags (and word losses) of every sentence of the set, in file order (with max_batches, of
    the sentences those batches reach)."""
    labels = [id2label[i] for i in range(len(id2label))]
    label_id = {label: i for i, label in enumerate(labels)}
    found = word_log_probabilities(model, evaluation.loader, accelerator, evaluation.gold, len(labels), max_batches)
    result = WordPredictions()
    for sentence in sorted(found):
        log_probabilities, gold = found[sentence], evaluation.gold[sentence]
        seen = ~np.isnan(log_probabilities[:, 0])
        tags = [labels[i] for i in decode(log_probabilities[seen], labels, decoding)]
        gold_ids = np.array([label_id[tag] for tag in gold], dtype=np.int64)
        losses = np.zeros(len(gold), dtype=np.float64)
        losses[seen] = -log_probabilities[seen, gold_ids[seen]]
        result.gold.append(gold)
        result.predicted.append(fill_unseen(tags, seen.tolist()))
        result.losses.append(losses.tolist())
        result.log_probabilities.append(log_probabilities)
    return result


def score(
    model,
    evaluation: EvaluationSet,
    accelerator: Accelerator,
    id2label: dict[int, str],
    decoding: str = DEFAULT_DECODING,
    max_batches: int | None = None,
) -> dict:
    """Entity-level metrics (overall and per type, with 95 % intervals) of the model on the set's sentences."""
    predictions = collect_predictions(model, evaluation, accelerator, id2label, decoding, max_batches)
    return {**entity_metrics(predictions.gold, predictions.predicted), "sentences": len(predictions.gold)}


def score_sets(
    model,
    sets: dict[str, EvaluationSet],
    accelerator: Accelerator,
    id2label: dict[int, str],
    decoding: str = DEFAULT_DECODING,
) -> dict[str, dict]:
    """Metrics per evaluation set (language), plus their mean F1 when there are several."""
    results = {name: score(model, evaluation, accelerator, id2label, decoding) for name, evaluation in sets.items()}
    if len(results) > 1:
        results["mean_f1"] = sum(r["f1"] for r in results.values()) / len(results)
    return results
