"""The HTML report's structure, parsed: one SVG chart per curve with a point per step, the confusion counts, the worst
sentences' highlighted entities, nothing external, data escaped; from hand-made inputs and from real tiny runs."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_training

from ner_accel.inference.entities import extract_entities
from ner_accel.reporting.charts import nice_ticks
from ner_accel.reporting.html_report import load_training_metrics, render_html, write_html

LABELS = ["O", "B-LOC", "B-ORG", "B-PER", "I-PER"]
CONFUSION = [[40, 1, 2, 0, 0], [3, 5, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 1, 7, 2], [1, 0, 0, 0, 6]]
TOKENS = ["Angela", "Merkel", "visited", "<script>", "Paris", "."]
GOLD = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
PREDICTED = ["B-PER", "I-PER", "O", "B-ORG", "B-PER", "O"]
VOID = {"meta", "br", "hr", "img", "input", "link"}


def scores(f1: float) -> dict:
    per_type = {kind: {"precision": f1, "recall": f1, "f1": f1, "support": 3} for kind in ("LOC", "ORG", "PER")}
    return {"precision": f1, "recall": f1, "f1": f1, "support": 9, "per_type": per_type, "sentences": 4}


TRAINING = {
    "evaluations": [
        {"step": 1, "loss": 2.0, "learning_rate": 5e-5},
        {"step": 2, "loss": 1.5, "learning_rate": 4e-5},
        {"step": 2, "epoch": 0, "validation": {"de": scores(0.2), "fr": scores(0.4), "mean_f1": 0.3}},
        {"step": 3, "loss": 1.0, "learning_rate": 3e-5},
        {"step": 4, "loss": 0.5, "learning_rate": 2e-5},
        {"step": 4, "epoch": 1, "validation": {"de": scores(0.5), "fr": scores(0.7), "mean_f1": 0.6}},
    ],
    "final": {"de": scores(0.5), "fr": scores(0.7), "mean_f1": 0.6},
}
ANALYSIS = {
    "labels": LABELS,
    "confusion": CONFUSION,
    "worst_sentences": [
        {"index": 7, "loss": 9.5, "tokens": TOKENS, "gold": GOLD, "predicted": PREDICTED, "losses": [1.0] * 6}
    ],
}
EVALUATION = {
    "split": "validation",
    "datasets": ["de"],
    "models": [
        {"name": "de", "path": "runs/de", "results": {"de": {**scores(0.5), "analysis": ANALYSIS}}, "mean_f1": 0.5},
        {"name": "<b>fr</b>", "path": "runs/fr", "results": {"de": scores(0.3)}, "mean_f1": 0.3},
    ],
    "cross_lingual_f1": {"de": {"de": 0.5, "mean": 0.5}, "<b>fr</b>": {"de": 0.3, "mean": 0.3}},
}


class Page(HTMLParser):
    """What the tests look at: charts, confusion cells, entity marks, every attribute; tags must nest properly."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.charts: list[list[tuple[str, int]]] = []  # per <svg>: (series name, number of points) per polyline
        self.counts: list[int] = []
        self.marks: list[dict] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.ids: list[str] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.feed(html)
        self.close()
        assert self.open == [], f"unclosed tags: {self.open}"

    def handle_starttag(self, tag: str, attrs: list) -> None:
        found = dict(attrs)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag not in VOID:
            self.open.append(tag)
        if tag == "svg":
            self.charts.append([])
        elif tag == "polyline":
            self.charts[-1].append((found["data-series"], len(found["points"].split())))
        elif tag == "td" and "data-count" in found:
            self.counts.append(int(found["data-count"]))
        elif tag == "mark" and found.get("data-type"):
            self.marks.append({"class": found["class"], "type": found["data-type"], "text": ""})
        if "id" in found:
            self.ids.append(found["id"])

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if "mark" in self.open and self.marks:
            self.marks[-1]["text"] += data


def polyline_points(html: str, series: str) -> list[tuple[float, float]]:
    start = html.index(f'data-series="{series}"')
    points = html[html.index('points="', start) + 8 : html.index('"/>', start)]
    return [tuple(map(float, pair.split(","))) for pair in points.split()]


def assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "url(" not in html
    for tag, name, value in Page(html).attributes:
        if name in ("src", "href", "xlink:href", "action"):
            assert value.startswith("#"), f"<{tag} {name}={value!r}> reaches outside the page"


def test_curves_have_one_chart_each_and_a_point_per_step():
    page = Page(render_html(TRAINING, None, "run"))
    assert page.charts == [[("loss", 4)], [("learning rate", 4)], [("de", 2), ("fr", 2), ("mean", 2)]]
    loss = polyline_points(render_html(TRAINING), "loss")
    assert [x for x, _ in loss] == sorted(x for x, _ in loss)  # steps run left to right
    assert [y for _, y in loss] == sorted(y for _, y in loss)  # falling loss: growing SVG y (down the page)
    assert {"curves", "final"} <= set(page.ids)


def test_a_non_finite_loss_is_left_out_of_the_line():
    training = {"evaluations": [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")}, {"step": 3, "loss": 0.5}]}
    assert Page(render_html(training)).charts[0] == [("loss", 2)]


def test_confusion_cells_hold_the_counts_row_by_row():
    page = Page(render_html(None, EVALUATION))
    assert page.counts == [count for row in CONFUSION for count in row]
    assert "cross" in page.ids and "errors" in page.ids  # two models: the cross-lingual matrix


def test_worst_sentence_shows_gold_and_predicted_entities_with_mistakes_marked():
    page = Page(render_html(None, EVALUATION))
    found = [(mark["type"], mark["text"], mark["class"]) for mark in page.marks]
    assert found == [
        ("PER", "Angela Merkel", "ent"),  # gold line
        ("LOC", "Paris", "ent missed"),
        ("PER", "Angela Merkel", "ent"),  # predicted line
        ("ORG", "<script>", "ent wrong"),
        ("PER", "Paris", "ent wrong"),
    ]
    assert " ".join(TOKENS) in " ".join("".join(page.text).split())  # the gold line reads as the sentence


def test_everything_from_the_data_is_escaped_and_nothing_is_fetched():
    html = render_html(TRAINING, EVALUATION, title="<img src=x onerror=alert(1)>")
    assert_self_contained(html)
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "&lt;b&gt;fr&lt;/b&gt;" in html and "<b>fr</b>" not in html
    assert "<img" not in html


def test_empty_inputs_say_so():
    assert "Nothing to show" in render_html(None, None)


def test_extract_entities_match_seqeval():
    from seqeval.metrics.sequence_labeling import get_entities

    for length in range(1, 5):
        for tags in itertools.product(["O", "B-A", "I-A", "B-B", "I-B"], repeat=length):
            expected = [(kind, start, end + 1) for kind, start, end in get_entities(list(tags))]
            assert extract_entities(list(tags)) == expected, tags


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 1.85) == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])
    assert nice_ticks(0, 4.5e-5) == pytest.approx([0, 1e-5, 2e-5, 3e-5, 4e-5, 5e-5])
    assert nice_ticks(0, 50) == [0, 10, 20, 30, 40, 50]
    assert nice_ticks(0, 0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])  # all-zero F1 still gets an axis


def test_write_html_replaces_atomically(tmp_path):
    target = tmp_path / "deep" / "report.html"
    write_html(target, TRAINING, None, "run")
    write_html(target, TRAINING, EVALUATION, "run and evaluation")
    assert "run and evaluation" in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


@pytest.mark.slow
def test_real_tiny_run_and_its_evaluation(tiny_model, conll_dir, tmp_path):
    """metrics.json of a real run (the report written after training) and evaluate's report with the curves of the
    evaluated run directory (evaluate --html)."""
    from accelerate.state import AcceleratorState

    from ner_accel import evaluate

    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path, "--run-name", "run",
            "--per-device-train-batch-size", "2", "--logging-steps", "1", "--num-train-epochs", "2",
            "--mixed-precision", "no"]  # fmt: skip
    assert run_training(args) == 0
    run = tmp_path / "run"
    metrics = load_training_metrics(run / "model")
    assert metrics == json.loads((run / "metrics.json").read_text()) == load_training_metrics(run)
    logged = [e for e in metrics["evaluations"] if "loss" in e]
    evaluated = [e for e in metrics["evaluations"] if "validation" in e]
    page = Page(render_html(metrics, None, run.name))
    assert page.charts == [[("loss", len(logged))], [("learning rate", len(logged))], [("data", len(evaluated))]]
    assert len(logged) == 6 and len(evaluated) == 2

    output = tmp_path / "evaluation.json"
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        assert evaluate.main(["--model", str(run), "--data-dir", str(conll_dir), "--output", str(output),
                              "--mixed-precision", "no"]) == 0  # fmt: skip
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    report = json.loads(output.read_text())
    analysis = report["models"][0]["results"]["data"]["analysis"]
    write_html(tmp_path / "report.html", load_training_metrics(run), report, "tiny")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    page = Page(html)
    assert len(page.charts) == 3
    assert page.counts == [count for row in analysis["confusion"] for count in row]
    worst = analysis["worst_sentences"][0]
    gold_marks = [(kind, " ".join(worst["tokens"][start:end])) for kind, start, end in extract_entities(worst["gold"])]
    assert [(m["type"], m["text"]) for m in page.marks[: len(gold_marks)]] == gold_marks


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian package chromium) to render the page")
def test_the_page_renders_in_headless_chromium_without_console_messages(tmp_path):
    page, screenshot = tmp_path / "report.html", tmp_path / "report.png"
    write_html(page, TRAINING, EVALUATION, "browser check")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--window-size=1280,1600", f"--screenshot={screenshot}"]  # fmt: skip
    done = subprocess.run([str(CHROMIUM), *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Chromium logs each console message and uncaught exception of the page as a CONSOLE line on stderr.
    assert [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line] == []
    header = screenshot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1280, 1600)
    assert screenshot.stat().st_size > 20_000  # the charts, tables and marks; a blank page compresses to a few kB
