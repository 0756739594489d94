"""ner_accel.evaluate: the metrics training reported, the cross-lingual matrix, splits, Hub layout, processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import VALIDATION, build_model_dir
from test_multilingual import build_hub_copy, write_language

from ner_accel import evaluate, train
from ner_accel.data.readers import read_conll
from ner_accel.training.precision import resolve_mixed_precision


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs, one on 'de' and one on 'fr' (fr validates on one sentence only)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(root / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        model = build_model_dir(root / "tiny")
        data = {"de": write_language(root, "de"), "fr": write_language(root, "fr", VALIDATION.split("\n\n")[0] + "\n")}
        for name, directory in data.items():
            args = ["--model", str(model), "--data-dir", str(directory), "--output-dir", str(root / "out"),
                    "--run-name", name, "--num-train-epochs", "2", "--per-device-train-batch-size", "2",
                    "--mixed-precision", "no"]  # fmt: skip
            assert train.main(args) == 0
    return {"root": root, "data": data, "de": root / "out" / "de", "fr": root / "out" / "fr"}


def final_metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["final"]


def test_evaluate_reproduces_training_metrics(runs, tmp_path, capsys):
    output = tmp_path / "eval.json"
    args = ["--model", str(runs["de"]), "--data-dir", str(runs["data"]["de"]), "--output", str(output)]
    assert evaluate.main([*args, "--error-analysis", "--worst", "2"]) == 0
    report = json.loads(output.read_text())
    found, trained = report["models"][0]["results"]["de"], final_metrics(runs["de"])["de"]
    for key in ("precision", "recall", "f1", "support", "sentences", "per_type"):
        assert found[key] == trained[key], key
    assert report["models"][0]["name"] == "de"
    printed = capsys.readouterr().out
    assert "worst sentence 1" in printed and "tag confusion" in printed and "Cross-lingual F1" in printed


def test_error_analysis_points_at_the_right_sentences(runs, tmp_path):
    output = tmp_path / "eval.json"
    assert (
        evaluate.main(["--model", str(runs["de"]), "--data-dir", str(runs["data"]["de"]), "--output", str(output)]) == 0
    )
    analysis = json.loads(output.read_text())["models"][0]["results"]["de"]["analysis"]
    sentences = read_conll(runs["data"]["de"] / "validation.conll")
    for record in analysis["worst_sentences"]:  # loaders sort by length; results come back in file order
        assert record["tokens"] == sentences[record["index"]]["tokens"]
        assert record["gold"] == sentences[record["index"]]["tags"]
        assert record["loss"] == pytest.approx(sum(record["losses"]))
    losses = [r["loss"] for r in analysis["worst_sentences"]]
    assert losses == sorted(losses, reverse=True) and len(losses) == 3
    assert sum(map(sum, analysis["confusion"])) == sum(len(s["tags"]) for s in sentences)


def test_cross_lingual_matrix(runs, tmp_path, capsys):
    output = tmp_path / "matrix.json"
    data = [str(runs["data"]["de"]), str(runs["data"]["fr"])]
    args = ["--model", str(runs["de"]), str(runs["fr"]), "--data-dir", *data, "--output", str(output), "--markdown"]
    assert evaluate.main(args) == 0
    matrix = json.loads(output.read_text())["cross_lingual_f1"]
    assert list(matrix) == ["de", "fr"] and all(list(row) == ["de", "fr", "mean"] for row in matrix.values())
    assert matrix["de"]["de"] == final_metrics(runs["de"])["de"]["f1"]
    assert matrix["fr"]["fr"] == final_metrics(runs["fr"])["fr"]["f1"]
    assert matrix["fr"]["mean"] == pytest.approx((matrix["fr"]["de"] + matrix["fr"]["fr"]) / 2)
    assert "| trained on \\ tested on | de | fr | mean |" in capsys.readouterr().out


def test_other_split_and_hub_layout(runs, tmp_path):
    output = tmp_path / "test.json"
    args = ["--model", str(runs["de"] / "model"), "--split", "test", "--output", str(output)]
    assert evaluate.main([*args, "--data-dir", str(runs["data"]["de"])]) == 0
    local = json.loads(output.read_text())["models"][0]["results"]["de"]
    hub = build_hub_copy(tmp_path, languages=("de", "it"))
    assert evaluate.main([*args, "--dataset", str(hub), "--languages", "de", "it", "--max-eval-samples", "2"]) == 0
    report = json.loads(output.read_text())
    assert report["datasets"] == ["de", "it"] and report["split"] == "test"
    assert report["models"][0]["results"]["de"]["sentences"] == 2
    assert local["sentences"] == 3


def test_bad_input_exits_2(runs, tmp_path, capsys):
    data = str(runs["data"]["de"])
    out = ["--output", str(tmp_path / "x.json")]
    assert evaluate.main(["--model", str(tmp_path / "none"), "--data-dir", data, *out]) == 2
    assert evaluate.main(["--model", str(runs["de"]), *out]) == 2
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", data, "--languages", "de", *out]) == 2
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", data, "--split", "dev", *out]) == 2
    odd = write_language(tmp_path, "odd", validation="Paris\tB-MISC\n")
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", str(odd), *out]) == 2
    message = capsys.readouterr().err
    assert f"{odd / 'validation.conll'}:1: tag 'B-MISC' is not in the model's labels" in message
    assert not (tmp_path / "x.json").exists()
    (tmp_path / "taken").mkdir()
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", data, "--output", str(tmp_path / "taken")]) == 2
    assert "is a directory" in capsys.readouterr().err
    base = shutil.copytree(runs["de"] / "model", tmp_path / "base")  # as a pretrained encoder: placeholder labels
    config = json.loads((base / "config.json").read_text())
    config["id2label"] = {i: f"LABEL_{i}" for i in config["id2label"]}
    config["label2id"] = {f"LABEL_{i}": int(i) for i in config["id2label"]}
    (base / "config.json").write_text(json.dumps(config))
    assert evaluate.main(["--model", str(base), "--data-dir", data, *out]) == 2
    assert "placeholders" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_same_metrics(runs, tmp_path):
    """accelerate launch with 2 CPU processes: every sentence scored once, same numbers as one process."""
    args = ["-m", "ner_accel.evaluate", "--model", str(runs["de"]), str(runs["fr"]), "--data-dir",
            str(runs["data"]["de"]), str(runs["data"]["fr"]), "--per-device-batch-size", "1"]  # fmt: skip
    precision = resolve_mixed_precision("auto", use_cpu=True)  # both runs at what auto gives the in-process one
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", precision, "--dynamo_backend", "no"]  # fmt: skip
    env = {"HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([*launch, *args, "--output", str(tmp_path / "two.json")], check=True, env=env, timeout=300)
    assert evaluate.main([*args[2:], "--output", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    for a, b in zip(two["models"], one["models"]):
        for name in ("de", "fr"):
            left, right = a["results"][name], b["results"][name]
            assert left["sentences"] == right["sentences"] and left["f1"] == right["f1"]
            assert left["analysis"]["confusion"] == right["analysis"]["confusion"]
            assert left["analysis"]["sentence_losses"] == pytest.approx(right["analysis"]["sentence_losses"], abs=1e-5)


def test_no_file_unless_asked_and_an_html_report_when_asked(runs, tmp_path, monkeypatch, capsys):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", str(runs["data"]["de"])]) == 0
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing left in the working directory
    page = tmp_path / "report" / "eval.html"
    assert evaluate.main(["--model", str(runs["de"]), "--data-dir", str(runs["data"]["de"]), "--html", str(page)]) == 0
    html = page.read_text()
    assert "<svg" in html and "Merkel" in html  # the learning curves of the run, and its worst sentences
    assert f"wrote {page}" in capsys.readouterr().out
