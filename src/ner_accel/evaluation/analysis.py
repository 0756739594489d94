"""Error analysis, as in the book: sentences by loss, the tag confusion matrix, and the tokens that carry the loss."""

from __future__ import annotations

from collections import defaultdict


def worst_sentences(
    words: list[list[str]], gold: list[list[str]], predicted: list[list[str]], losses: list[list[float]], n: int
) -> list[dict]:
    """The n sentences with the largest summed word loss (the book's ranking), gold and predicted side by side."""
    totals = [sum(sentence) for sentence in losses]
    order = sorted(range(len(totals)), key=lambda i: -totals[i])[:n]
    return [
        {
            "index": i,
            "loss": totals[i],
            "mean_loss": totals[i] / max(1, len(losses[i])),
            "tokens": words[i],
            "gold": gold[i],
            "predicted": predicted[i],
            "losses": losses[i],
        }
        for i in order
    ]


def confusion_matrix(gold: list[list[str]], predicted: list[list[str]], labels: list[str]) -> list[list[int]]:
    """Word counts: row = gold tag, column = predicted tag, both in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for gold_tags, predicted_tags in zip(gold, predicted):
        for g, p in zip(gold_tags, predicted_tags):
            matrix[index[g]][index[p]] += 1
    return matrix


def loss_by_key(keys: list[list[str]], losses: list[list[float]], top: int | None = None) -> list[dict]:
    """Summed and mean loss per key (a word or a tag), largest total first: where the model loses most."""
    total, count = defaultdict(float), defaultdict(int)
    for sentence_keys, sentence_losses in zip(keys, losses):
        for key, loss in zip(sentence_keys, sentence_losses):
            total[key] += loss
            count[key] += 1
    rows = [{"key": k, "count": count[k], "total_loss": total[k], "mean_loss": total[k] / count[k]} for k in total]
    return sorted(rows, key=lambda row: (-row["total_loss"], row["key"]))[:top]


def error_analysis(
    words: list[list[str]],
    gold: list[list[str]],
    predicted: list[list[str]],
    losses: list[list[float]],
    labels: list[str],
    worst: int = 10,
    top_tokens: int = 10,
) -> dict:
    """Everything the book's error-analysis section looks at, as JSON-ready data."""
    scored = sum(len(sentence) for sentence in losses)
    return {
        "mean_word_loss": sum(map(sum, losses)) / max(1, scored),
        "sentence_losses": [sum(sentence) for sentence in losses],
        "worst_sentences": worst_sentences(words, gold, predicted, losses, worst),
        "labels": labels,
        "confusion": confusion_matrix(gold, predicted, labels),
        "tokens": loss_by_key(words, losses, top_tokens),
        "gold_tags": loss_by_key(gold, losses),
    }
