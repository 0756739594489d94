"""Entity-level precision, recall and F1 (seqeval's default mode, as the seed), overall and per entity type, each
F1 with a 95 % bootstrap interval over sentences."""

from __future__ import annotations

from .intervals import RESAMPLES, bootstrap_intervals, sentence_counts


def entity_metrics(gold: list[list[str]], predicted: list[list[str]], resamples: int = RESAMPLES) -> dict:
    """{"precision", "recall", "f1", "f1_interval", "support", "per_type": {TYPE: {precision, recall, f1,
    f1_interval, support}}}; support: gold entities.

    The point values are seqeval's (one pass: its report's micro average is precision_score / recall_score /
    f1_score in the default mode); the intervals resample sentences (intervals.py), whose counts sum to seqeval's.
    """
    # Imported here: seqeval pulls in scikit-learn (2 s), which `ner_accel.predict` never needs.
    from seqeval.metrics import classification_report

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    intervals = bootstrap_intervals(sentence_counts(gold, predicted, sorted(per_type)), resamples)
    for kind, interval in zip(sorted(per_type), intervals["per_type"]):
        per_type[kind]["f1_interval"] = interval
    overall = report["micro avg"]
    return {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
        "f1_interval": intervals["overall"],
        "support": sum(v["support"] for v in per_type.values()),
        "per_type": per_type,
    }
