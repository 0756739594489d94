"""What the commands show in the terminal: logging set-up, rich tables of metrics and analyses, the run summary."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from accelerate import Accelerator
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from transformers.utils import logging as hf_logging


def setup_logging(accelerator: Accelerator) -> Console:
    """Rich log lines on stderr, from the main process only; the libraries' chatter turned down."""
    console = Console(stderr=True)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": noise around our own bar
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # save_state logs every file it writes
    return console


def print_results(results: dict[str, dict], console: Console, accelerator: Accelerator, title: str) -> None:
    """One per-entity table per evaluation set, then the mean F1 when there are several (main process only)."""
    if accelerator.is_main_process:
        for name, metrics in results.items():
            if name != "mean_f1":
                console.print(metrics_table(metrics, f"{title}: {name}"))
        if "mean_f1" in results:
            console.print(f"{title}: mean F1 over {len(results) - 1} languages = {results['mean_f1']:.4f}")


def report_text(results: dict[str, dict]) -> str:
    """Plain-text per-entity tables, one per evaluation set (the run directory's report.txt)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None)
    for name, metrics in results.items():
        if name == "mean_f1":
            console.print(f"mean F1 over {len(results) - 1} languages: {metrics:.4f}")
        else:
            console.print(metrics_table(metrics, name))
    return buffer.getvalue()


def print_summary(
    console: Console,
    seconds: float,
    steps: int,
    batch: int,
    f1: float,
    final_step: int,
    places: dict[str, Path],
    phases: dict[str, float] | None = None,
) -> None:
    """The end-of-run summary: time and speed (and where the time went), the final F1, where the results are and
    what they take on disk (unwrapped, so the paths copy whole)."""
    training = (phases or {}).get("train") or seconds
    console.print(f"done in {seconds / 60:.1f} min ({steps} steps, {steps * batch / training:,.1f} sentences/s "
                  f"training); F1 {f1:.4f} (step {final_step})", soft_wrap=True, highlight=False)  # fmt: skip
    if phases:
        spent = ", ".join(f"{name} {value:,.1f} s" for name, value in phases.items())
        console.print(f"  {'time:':12} {spent}", soft_wrap=True, highlight=False)
    for name, path in places.items():
        size = f" ({disk_usage(path)}{'; delete them once you will not resume' if name == 'checkpoints' else ''})"
        console.print(f"  {name + ':':12} {path}{size if path.is_dir() else ''}", soft_wrap=True, highlight=False)


def disk_usage(path: Path) -> str:
    size = sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.exists() else 0
    return f"{size / 2**20:,.0f} MiB" if size < 2**30 else f"{size / 2**30:,.1f} GiB"


def print_analysis(console: Console, model_name: str, results: dict[str, dict], shown: int = 3) -> None:
    """The book's error analysis of one model on each set: worst sentences, tag confusion, lossy tokens and tags."""
    for name, metrics in results.items():
        analysis, where = metrics["analysis"], f"{model_name} on {name}"
        for rank, record in enumerate(analysis["worst_sentences"][:shown], start=1):
            console.print(sentence_table(record, f"{where}: worst sentence {rank}, #{record['index']}"))
        console.print(confusion_table(analysis["confusion"], analysis["labels"], f"{where}: tag confusion (words)"))
        console.print(loss_table(analysis["tokens"], f"{where}: tokens with the most loss"))
        console.print(loss_table(analysis["gold_tags"], f"{where}: loss by gold tag", key="tag"))


# ---------------------------------------------------------------------------------------------------------------
# Tables


def interval(values: dict) -> str:
    """The F1's 95 % bootstrap interval, as the tables show it."""
    low, high = values.get("f1_interval") or (float("nan"), float("nan"))
    return f"{low:.4f}-{high:.4f}"


def metrics_table(metrics: dict, title: str) -> Table:
    """Rich table: one row per entity type, then the overall (micro) row; support: the gold entities."""
    table = Table(title=title)
    for column in ("entity", "precision", "recall", "f1", "f1 95% interval", "gold entities"):
        table.add_column(column, justify="left" if column == "entity" else "right")
    rows = [*sorted(metrics["per_type"].items()), ("overall", metrics)]
    for name, values in rows:
        table.add_row(
            name,
            *(f"{values[k]:.4f}" for k in ("precision", "recall", "f1")),
            interval(values),
            str(values["support"]),
            style="bold" if name == "overall" else None,
        )
    return table


def comparison_table(comparison: dict[str, dict], title: str) -> Table:
    """Rich table: per evaluation set, each model's F1, the difference with its paired 95 % interval, the p-value."""
    table = Table(title=title)
    for column in ("set", "F1 first", "F1 second", "difference", "95% interval", "p-value", "sentences"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name, c in comparison.items():
        low, high = c["interval"]
        table.add_row(name, f"{c['f1_first']:.4f}", f"{c['f1_second']:.4f}", f"{c['difference']:+.4f}",
                      f"{low:+.4f} to {high:+.4f}", f"{c['p_value']:.4f}", str(c["sentences"]))  # fmt: skip
    return table


def language_table(results: dict[str, dict], title: str) -> Table:
    """Rich table: one row per evaluation set (language), F1 per entity type and overall, then their mean."""
    types = sorted({kind for metrics in results.values() for kind in metrics["per_type"]})
    table = Table(title=title)
    table.add_column("language")
    for column in (*types, "precision", "recall", "f1", "f1 95% interval", "sentences"):
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        per_type = [f"{metrics['per_type'][k]['f1']:.4f}" if k in metrics["per_type"] else "-" for k in types]
        overall = [f"{metrics[k]:.4f}" for k in ("precision", "recall", "f1")]
        table.add_row(name, *per_type, *overall, interval(metrics), str(metrics["sentences"]))
    if len(results) > 1:
        mean = sum(m["f1"] for m in results.values()) / len(results)
        table.add_row("mean", *[""] * (len(types) + 2), f"{mean:.4f}", "", "", style="bold")
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


def sentence_table(record: dict, title: str) -> Table:
    """One sentence as columns: token, gold tag, predicted tag, loss; mistakes in bold red."""
    table = Table(title=f"{title} (loss {record['loss']:.2f})")
    for column in ("token", "gold", "predicted", "loss"):
        table.add_column(column, justify="right" if column == "loss" else "left")
    for token, g, p, loss in zip(record["tokens"], record["gold"], record["predicted"], record["losses"]):
        table.add_row(token, g, p, f"{loss:.2f}", style="bold red" if g != p else None)
    return table


def confusion_table(matrix: list[list[int]], labels: list[str], title: str) -> Table:
    """Rows are gold tags, columns predicted tags; the diagonal (correct words) in bold."""
    table = Table(title=title)
    table.add_column("gold \\ predicted")
    for label in labels:
        table.add_column(label, justify="right")
    for i, (label, row) in enumerate(zip(labels, matrix)):
        table.add_row(label, *(f"[bold]{n}[/bold]" if i == j else str(n) for j, n in enumerate(row)))
    return table


def loss_table(rows: list[dict], title: str, key: str = "token") -> Table:
    table = Table(title=title)
    for column in (key, "count", "total loss", "mean loss"):
        table.add_column(column, justify="left" if column == key else "right")
    for row in rows:
        table.add_row(row["key"], str(row["count"]), f"{row['total_loss']:.2f}", f"{row['mean_loss']:.3f}")
    return table
