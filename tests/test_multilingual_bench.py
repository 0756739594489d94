"""benchmarks/multilingual.py end to end on the tiny model: Trainer recipe and one ner_accel configuration, three
languages, one seed; the report's structure, not its numbers."""

from __future__ import annotations

import json

import pytest
from conftest import TRAIN, VALIDATION, load_benchmark


def test_multilingual_bench_end_to_end(tmp_path, tiny_model):
    pytest.importorskip("seqeval")
    root = tmp_path / "panx"
    for language in ("de", "fr", "en"):  # the same sentences under three names: the languages of the report
        (root / language).mkdir(parents=True)
        (root / language / "train.conll").write_text(TRAIN, encoding="utf-8")
        (root / language / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    output = tmp_path / "out" / "trials.json"
    argv = ["--model", str(tiny_model), "--data-root", str(root), "--train-languages", "de", "fr"]
    argv += ["--train-samples", "4", "--epochs", "1", "--batch-size", "2", "--seeds", "7", "--threads", "1"]
    argv += ["--configs", "lr=--learning-rate 1e-4", "trainer", "--output", str(output)]
    report = load_benchmark("multilingual").main([*argv, "--compare"])  # the Trainer runs last: paired all the same

    saved = json.loads(output.read_text())
    assert saved["columns"] == ["de", "fr", "en", "mean"] == report["columns"]
    assert saved["workload"]["train_sentences"] == {"de": 4, "fr": 4}
    runs = {r["config"]: r for r in saved["runs"]}
    assert list(runs) == ["lr", "trainer"] and runs["trainer"]["flags"] is None
    compared = runs["lr"]["paired_with"]["trainer"]  # --compare: on the same sentences, per language
    assert compared.keys() == {"de", "fr", "en"} and all(-1 <= c["difference"] <= 1 for c in compared.values())
    assert all(
        c["interval"][0] <= c["difference"] <= c["interval"][1] and 0 < c["p_value"] <= 1 for c in compared.values()
    )
    assert runs["lr"]["flags"] == "--learning-rate 1e-4" and runs["lr"]["hyper_parameters"]["learning_rate"] == 1e-4
    for run in runs.values():
        assert run["seed"] == 7 and run["epochs"] == 1 and run["train_languages"] == ["de", "fr"]
        assert run["f1"].keys() == {"de", "fr", "en", "mean"} and all(0 <= f <= 1 for f in run["f1"].values())
        assert run["eval_sentences"] == {"de": 3, "fr": 3, "en": 3}
        assert run["commit"] == saved["snapshot"]["commit"] and run["wall_s"] > 0
    paired = saved["summary"]["lr"]["vs_trainer"]
    assert paired["seeds"] == [7] and paired["mean"]["deltas"] == [
        runs["lr"]["f1"]["mean"] - runs["trainer"]["f1"]["mean"]
    ]
    assert saved["summary"]["trainer"]["f1"]["de"]["n"] == 1
    table = output.with_suffix(".md").read_text()
    assert "| lr | `--learning-rate 1e-4` | 7 |" in table and "Paired differences against trainer" in table

    # --resume keeps every earlier run (configurations not asked again too) and runs only what is missing.
    again = load_benchmark("multilingual").main([*argv[: argv.index("--configs")], "--resume", "--output", str(output),
                                              "--configs", "lr=--learning-rate 1e-4", "warm=--warmup-ratio 0.5"])  # fmt: skip
    assert [r["config"] for r in again["runs"]] == ["lr", "trainer", "warm"]
    assert again["runs"][:2] == saved["runs"] and "vs_trainer" in again["summary"]["warm"]
