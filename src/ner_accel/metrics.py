"""Entity-level precision, recall and F1 (seqeval's default mode, as the seed), overall and per entity type."""

from __future__ import annotations

from rich.table import Table


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """{"precision", "recall", "f1", "support", "per_type": {TYPE: {precision, recall, f1, support}}}.

    One seqeval pass: its report's micro average is precision_score / recall_score / f1_score (default mode),
    and on 10,000 sentences each further pass would cost about half a second.
    """
    # Imported here: seqeval pulls in scikit-learn (2 s), which `ner_accel.predict` never needs.
    from seqeval.metrics import classification_report

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        name: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for name, v in report.items()
        if not name.endswith(" avg")
    }
    overall = report["micro avg"]
    return {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
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
            name,
            *(f"{values[k]:.4f}" for k in ("precision", "recall", "f1")),
            str(values["support"]),
            style="bold" if name == "overall" else None,
        )
    return table


def language_table(results: dict[str, dict], title: str) -> Table:
    """Rich table: one row per evaluation set (language), F1 per entity type and overall, then their mean."""
    types = sorted({kind for metrics in results.values() for kind in metrics["per_type"]})
    table = Table(title=title)
    table.add_column("language")
    for column in (*types, "precision", "recall", "f1", "sentences"):
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        per_type = [f"{metrics['per_type'][k]['f1']:.4f}" if k in metrics["per_type"] else "-" for k in types]
        overall = [f"{metrics[k]:.4f}" for k in ("precision", "recall", "f1")]
        table.add_row(name, *per_type, *overall, str(metrics["sentences"]))
    if len(results) > 1:
        mean = sum(m["f1"] for m in results.values()) / len(results)
        table.add_row("mean", *[""] * (len(types) + 2), f"{mean:.4f}", "", style="bold")
    return table


def cross_lingual_table(matrix: dict[str, dict[str, float]], title: str) -> Table:
    """The book's cross-lingual table: F1 with training languages as rows and test languages as columns."""
    columns = list(next(iter(matrix.values())))
    table = Table(title=title)
    table.add_column("trained on \\ tested on")
    for column in columns:
        table.add_column(column, justify="right", style="bold" if column == "mean" else None)
    for row, values in matrix.items():
        table.add_row(row, *(f"{values[c]:.4f}" for c in columns))
    return table


def matrix_markdown(matrix: dict[str, dict[str, float]]) -> str:
    """The cross-lingual table as Markdown, to paste into a report or README."""
    columns = list(next(iter(matrix.values())))
    lines = ["| trained on \\ tested on | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {row} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |" for row, values in matrix.items()]
    return "\n".join(lines)
