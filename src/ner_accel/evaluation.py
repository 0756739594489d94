"""Evaluate a model on a prepared loader: predictions gathered across processes, aligned to words, scored."""

from __future__ import annotations

from itertools import islice

import torch
from accelerate import Accelerator

from .alignment import IGNORE, align_predictions
from .metrics import entity_metrics


@torch.no_grad()
def predict_word_tags(
    model, loader, accelerator: Accelerator, id2label: dict[int, str], max_batches: int | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """(gold, predicted) tag lists for every sentence the loader holds, on every process, each sentence once."""
    model.eval()
    gold, predicted = [], []
    for batch in islice(loader, max_batches):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # Processes pad to different lengths: pad to a common one, then gather (dropping duplicated tail rows).
        predictions = accelerator.pad_across_processes(logits.argmax(dim=-1), dim=1, pad_index=IGNORE)
        labels = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=IGNORE)
        predictions, labels = accelerator.gather_for_metrics((predictions, labels))
        batch_predicted, batch_gold = align_predictions(predictions.cpu().numpy(), labels.cpu().numpy(), id2label)
        predicted += batch_predicted
        gold += batch_gold
    if max_batches is not None:
        loader.end()  # a partial pass must not stay registered as the active dataloader
    model.train()
    return gold, predicted


def evaluate(model, loader, accelerator: Accelerator, id2label: dict[int, str], max_batches: int | None = None) -> dict:
    """Entity-level metrics (overall and per type) of the model on the loader's sentences."""
    gold, predicted = predict_word_tags(model, loader, accelerator, id2label, max_batches)
    return {**entity_metrics(gold, predicted), "sentences": len(gold)}
