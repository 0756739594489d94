"""Entity-level precision, recall and F1 (seqeval's default mode, as the seed), overall and per entity type."""

from __future__ import annotations

from rich.table import Table
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """{"precision", "recall", "f1", "support", "per_type": {TYPE: {precision, recall, f1, support}}}."""
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    return {
        "precision": float(precision_score(gold, predicted, zero_division=0)),
        "recall": float(recall_score(gold, predicted, zero_division=0)),
        "f1": float(f1_score(gold, predicted, zero_division=0)),
        "support": sum(v["support"] for v in per_type.values()),
        "per_type": per_type,
    }


def metrics_table(metrics: dict, title: str) -> Table:
    """Rich table: one row per entity type, then the overall (micro) row."""
    table = Table(title=title)
    for column in ("entity", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="left" if column == "entity" else "right")
    rows = [*sorted(metrics["per_type"].items()), ("overall", metrics)]
    for name, values in rows:
        table.add_row(
            name, *(f"{values[k]:.4f}" for k in ("precision", "recall", "f1")), str(values["support"]),
            style="bold" if name == "overall" else None,
        )
    return table
