"""One self-contained HTML page of a training run and its evaluation: curves, scores, confusions, worst sentences.

The page needs nothing but a browser, offline: inline CSS and SVG charts drawn here; no script, font or URL.

    from ner_accel.reporting.html_report import load_training_metrics, write_html

    # after training, beside metrics.json (the final results carry no error analysis: no sentences, no confusions)
    write_html(run_dir / "report.html", training=metrics, title=run_dir.name)
    # evaluate --html FILE: its report, plus the learning curves when the model is a run directory
    write_html(Path(args.html), training=load_training_metrics(args.model[0]), evaluation=report, title="...")
    # (one run's curves per page: with several models, pass the run whose curves matter, or None)

training:   metrics.json as train.py writes it, {"evaluations": [{"step", "loss", "learning_rate"} or
            {"step", "epoch", "validation": {language: metrics, "mean_f1"?}}, ...], "final": {language: metrics, ...}}
evaluation: the report evaluate writes, {"split", "datasets", "models": [{"name", "path", "results": {set: metrics
            with "analysis"}, "mean_f1"}], "cross_lingual_f1": {model: {set: f1, "mean": f1}}}
Either may be None; the page shows what there is: training loss, learning rate and validation F1 per language (and
their mean) by step; P/R/F1 per entity type for each language; the cross-lingual F1 matrix (several models); per
model and set with an analysis, the tag confusion matrix as a heat map (colour: share of the gold tag's words) and
the worst sentences as text, gold and predicted entities highlighted by type, those the other side lacks outlined.
Every text from the data (tokens, tags, names, paths) is escaped: tokens come from user files.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from ..inference.entities import extract_entities
from ..rundir.files import write_text
from .charts import COLOURS, figure, line_chart

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
  padding:0 20px 40px;color:#1d1d1f;background:#fff}
h1{font-size:24px;margin:20px 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}nav a{margin-right:14px}.muted{color:#666}
.grid{display:flex;flex-wrap:wrap;gap:14px 22px;align-items:flex-start}
figure{margin:0;flex:1 1 460px;max-width:560px}figcaption{font-weight:600;margin-bottom:2px}
svg.chart{width:100%;height:auto;font-size:11px}svg .grid-line{stroke:#e6e6e6}svg .axis{stroke:#333}
svg .series{fill:none;stroke-width:2}svg .mean{stroke-dasharray:6 4}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:8px;padding:6px 14px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;margin:4px 0 10px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border:1px solid #e0e0e0;text-align:right}th{background:#f6f6f6}th:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding-bottom:3px}tr.overall td,tr.overall th{font-weight:700}
td.bar{background:linear-gradient(90deg,#bcd7ee calc(var(--v)*100%),transparent 0)}
table.heat td{min-width:44px}
.sentence{margin:10px 0 14px;padding:6px 10px;border-left:3px solid #ddd}
.line{display:grid;grid-template-columns:76px 1fr;line-height:2.1}.side{color:#666;font-size:12px}
mark.ent{background:color-mix(in srgb,var(--c) 22%,transparent);border-bottom:2px solid var(--c);
  padding:1px 2px;border-radius:3px;color:inherit}
mark.ent::after{content:attr(data-type);font-size:9px;font-weight:700;color:var(--c);margin-left:3px;
  vertical-align:super}
mark.ent.missed{outline:2px dashed #777;outline-offset:1px}mark.ent.wrong{outline:2px solid #d00;outline-offset:1px}
span.diff{text-decoration:underline wavy #d00}
details>summary{cursor:pointer;font-weight:600;margin:8px 0}
"""


def load_training_metrics(model_path: str | Path) -> dict | None:
    """metrics.json of the run that `model_path` (a run directory or its model/ folder) belongs to; None if none."""
    root = Path(model_path)
    for candidate in (root / "metrics.json", root.parent / "metrics.json" if root.name == "model" else None):
        if candidate is not None and candidate.is_file():
            try:
                metrics = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # the curves decorate a report; a broken file must not cost the report
                return None
            return metrics if isinstance(metrics, dict) else None
    return None


def write_html(
    path: Path, training: dict | None = None, evaluation: dict | None = None, title: str = "ner_accel report"
) -> None:
    """render_html into `path` through the run's atomic write: readers never see half a page."""
    write_text(Path(path), render_html(training, evaluation, title))


def render_html(training: dict | None = None, evaluation: dict | None = None, title: str = "ner_accel report") -> str:
    """The whole page as one string; sections for what `training` (metrics.json) and `evaluation` hold."""
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    if training:
        sections.append(("curves", "Learning curves", learning_curves(training.get("evaluations", []))))
        if training.get("final"):
            sections.append(("final", "Final validation scores of the run", scores(training["final"])))
    if evaluation:
        split = escape(str(evaluation.get("split", "")))
        models = evaluation.get("models", [])
        for number, model in enumerate(models):
            heading = f"Model {escape(str(model.get('name', number)))} on {split}"
            where = f'<p class="muted">model: {escape(str(model.get("path", "")))}</p>'
            sections.append((f"scores-{number}", heading, where + scores(model.get("results", {}))))
        if len(models) > 1 and evaluation.get("cross_lingual_f1"):
            sections.append(("cross", f"Cross-lingual F1 on {split}", cross_lingual(evaluation["cross_lingual_f1"])))
        analyses = error_analyses(models)
        if analyses:
            sections.append(("errors", "Errors: tag confusions and the worst sentences", analyses))
    if not sections:
        sections.append(("empty", "Nothing to show", "<p>No training metrics and no evaluation report were given.</p>"))
    nav = "".join(f'<a href="#{anchor}">{heading}</a>' for anchor, heading, _ in sections)
    body = "".join(f'<section id="{anchor}"><h2>{heading}</h2>{html}</section>' for anchor, heading, html in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"{key_numbers(training, evaluation)}<nav>{nav}</nav>{body}</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Sections


def per_language(results: dict) -> dict[str, dict]:
    """The metrics of each evaluation set, without the scalar "mean_f1" that sits beside them."""
    return {name: metrics for name, metrics in results.items() if isinstance(metrics, dict)}


def key_numbers(training: dict | None, evaluation: dict | None) -> str:
    cards = []
    if training and training.get("final"):
        cards += [(f"run, final F1 {name}", m["f1"]) for name, m in per_language(training["final"]).items()]
    for model in (evaluation or {}).get("models", []):
        results = per_language(model.get("results", {}))
        cards += [(f"model {model.get('name', '')} on {name}, F1", m["f1"]) for name, m in results.items()]
    cells = "".join(f'<div class="card"><b>{value:.3f}</b>{escape(str(label))}</div>' for label, value in cards)
    return f'<div class="cards">{cells}</div>' if cards else ""


def learning_curves(history: list[dict]) -> str:
    """Loss and learning rate by logged step; validation F1 by evaluated step, one line per language and the mean."""
    logged = [entry for entry in history if "loss" in entry]
    evaluated = [entry for entry in history if "validation" in entry]
    figures = []
    if logged:
        loss = [(entry["step"], entry["loss"]) for entry in logged]
        rate = [(entry["step"], entry["learning_rate"]) for entry in logged if "learning_rate" in entry]
        figures.append(figure("Training loss", line_chart([("loss", loss)], "step", "loss")))
        figures.append(figure("Learning rate", line_chart([("learning rate", rate)], "step", "learning rate")))
    if evaluated:
        names = list(dict.fromkeys(name for entry in evaluated for name in per_language(entry["validation"])))
        series = [
            (name, [(e["step"], e["validation"][name]["f1"]) for e in evaluated if name in e["validation"]])
            for name in names
        ]
        mean = [(e["step"], e["validation"]["mean_f1"]) for e in evaluated if "mean_f1" in e["validation"]]
        series += [("mean", mean)] if mean else []
        figures.append(figure("Validation F1", line_chart(series, "step", "F1")))
    return f'<div class="grid">{"".join(figures)}</div>' if figures else "<p>No logged steps.</p>"


def f1_interval(values: dict) -> str:
    """The F1's 95 % bootstrap interval over sentences ('-' for metrics written before intervals)."""
    interval = values.get("f1_interval")
    return f"{interval[0]:.3f}&ndash;{interval[1]:.3f}" if interval else "-"


def scores(results: dict) -> str:
    """One table per language: precision, recall, F1 (with a bar, and its 95 % interval) and the gold entities per
    entity type, then overall."""
    tables = []
    for name, metrics in per_language(results).items():
        rows = [*((escape(str(kind)), values, "") for kind, values in sorted(metrics.get("per_type", {}).items()))]
        rows.append(("overall", metrics, ' class="overall"'))
        body = "".join(
            f"<tr{attrs}><th>{kind}</th>"
            f"<td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
            f'<td class="bar" style="--v:{v["f1"]:.4f}">{v["f1"]:.3f}</td><td>{f1_interval(v)}</td>'
            f"<td>{v['support']}</td></tr>"
            for kind, v, attrs in rows
        )
        sentences = f", {metrics['sentences']} sentences" if "sentences" in metrics else ""
        tables.append(
            f"<table><caption>{escape(str(name))}{sentences}</caption><tr><th>entity</th><th>precision</th>"
            f"<th>recall</th><th>F1</th><th>95% interval</th><th>gold entities</th></tr>{body}</table>"
        )
    mean = f"<p>mean F1 over the languages: <b>{results['mean_f1']:.4f}</b></p>" if "mean_f1" in results else ""
    return f'<div class="grid">{"".join(tables)}</div>{mean}'


def cross_lingual(matrix: dict[str, dict[str, float]]) -> str:
    """Rows: what each model was trained on; columns: the evaluation sets and the mean; shaded by F1."""
    columns = list(next(iter(matrix.values())))
    head = "".join(f"<th>{escape(str(column))}</th>" for column in columns)
    rows = "".join(
        f"<tr><th>{escape(str(row))}</th>"
        + "".join(f'<td class="bar" style="--v:{values[c]:.4f}">{values[c]:.3f}</td>' for c in columns)
        + "</tr>"
        for row, values in matrix.items()
    )
    return f"<table><tr><th>trained on \\ tested on</th>{head}</tr>{rows}</table>"


def error_analyses(models: list[dict]) -> str:
    """Per model and evaluation set with an analysis: the confusion heat map and the worst sentences."""
    blocks = []
    for model in models:
        for name, metrics in per_language(model.get("results", {})).items():
            analysis = metrics.get("analysis")
            if not analysis:
                continue
            labels = analysis["labels"]
            sentences = "".join(worst_sentence(record, labels) for record in analysis.get("worst_sentences", []))
            where = f"model {escape(str(model.get('name', '')))} on {escape(str(name))}"
            blocks.append(
                f"<details{' open' if not blocks else ''}><summary>{where}</summary>"
                f'<div class="grid"><div>{confusion_heatmap(analysis["confusion"], labels)}</div>'
                f'<div style="flex:1 1 520px"><h3>Worst sentences (largest summed word loss)</h3>'
                f"{LEGEND}{sentences}</div></div></details>"
            )
    return "".join(blocks)


# ---------------------------------------------------------------------------------------------------------------
# The confusion heat map and the highlighted sentences


def confusion_heatmap(matrix: list[list[int]], labels: list[str]) -> str:
    """Word counts, rows gold and columns predicted; colour by the share of the row (blue right, orange wrong)."""
    head = "".join(f"<th>{escape(label)}</th>" for label in labels)
    rows = []
    for i, (label, counts) in enumerate(zip(labels, matrix)):
        total = sum(counts)
        cells = []
        for j, count in enumerate(counts):
            share = count / total if total else 0.0
            alpha = max(share, 0.08) if count else 0.0  # a single confusion stays visible beside thousands
            colour = f"rgba(0,114,178,{alpha:.3f})" if i == j else f"rgba(213,94,0,{alpha:.3f})"
            ink = ";color:#fff" if alpha > 0.55 else ""
            tip = f"gold {escape(label)}, predicted {escape(labels[j])}: {count} words, {share:.1%} of the row"
            cells.append(f'<td data-count="{count}" style="background:{colour}{ink}" title="{tip}">{count}</td>')
        rows.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}<td>{total}</td></tr>")
    return (
        '<table class="heat"><caption>Tag confusion in words: rows gold, columns predicted; shade = share of the row'
        " (blue right, orange wrong)</caption>"
        f"<tr><th>gold \\ predicted</th>{head}<th>words</th></tr>{''.join(rows)}</table>"
    )


LEGEND = (
    '<p class="muted">Entities coloured by type. <mark class="ent missed" data-type="" style="--c:#777">dashed</mark>:'
    ' a gold entity not predicted as such; <mark class="ent wrong" data-type="" style="--c:#777">red box</mark>: a'
    ' predicted entity that is not gold (wrong type or boundary); <span class="diff">wavy</span>: a word whose'
    " predicted tag differs from the gold one.</p>"
)


def highlighted(tokens: list[str], tags: list[str], other_tags: list[str], colours: dict[str, str], flaw: str) -> str:
    """The sentence as text with its entities marked; those absent from `other_tags` get the `flaw` class, and on
    the predicted line (flaw "wrong") each word whose tag differs from the gold one is underlined."""
    others = set(extract_entities(other_tags))
    starts = {start: (kind, end) for kind, start, end in extract_entities(tags)}
    words = [
        f'<span class="diff" title="gold {escape(other)}, predicted {escape(tag)}">{escape(token)}</span>'
        if flaw == "wrong" and tag != other
        else escape(token)
        for token, tag, other in zip(tokens, tags, other_tags)
    ]
    parts, index = [], 0
    while index < len(tokens):
        if index not in starts:
            parts.append(words[index])
            index += 1
            continue
        kind, end = starts[index]
        classes = "ent" if (kind, index, end) in others else f"ent {flaw}"
        colour = colours.get(kind, COLOURS[-2])
        parts.append(
            f'<mark class="{classes}" data-type="{escape(kind)}" style="--c:{colour}">{" ".join(words[index:end])}</mark>'
        )
        index = end
    return " ".join(parts)


def worst_sentence(record: dict, labels: list[str]) -> str:
    kinds = sorted({label[2:] if label[:2] in ("B-", "I-") else label for label in labels if label != "O"})
    colours = {kind: COLOURS[i % len(COLOURS)] for i, kind in enumerate(kinds)}
    tokens, gold, predicted = record["tokens"], record["gold"], record["predicted"]
    return (
        f'<div class="sentence"><div class="muted">sentence #{record.get("index", "?")}, loss '
        f"{record.get('loss', 0.0):.2f}</div>"
        f'<div class="line gold"><span class="side">gold</span><span>{highlighted(tokens, gold, predicted, colours, "missed")}'
        f'</span></div><div class="line predicted"><span class="side">predicted</span>'
        f"<span>{highlighted(tokens, predicted, gold, colours, 'wrong')}</span></div></div>"
    )
