"""The benchmark's CPU path runs end to end on a tiny model and writes its report (no timing assertions)."""

from __future__ import annotations

import json

import pytest
from conftest import build_model_dir, load_benchmark

from ner_accel.training.precision import resolve_mixed_precision


def test_bench_train_cpu_path(tmp_path, conll_dir):
    pytest.importorskip("seqeval")
    model = build_model_dir(tmp_path / "model")
    output = tmp_path / "out" / "tiny.json"
    report = load_benchmark("bench_train").main(
        [
            "--model",
            str(model),
            "--data-dir",
            str(conll_dir),
            "--train-samples",
            "4",
            "--rounds",
            "1",
            "--batch-size",
            "2",
            "--configs",
            "seed",
            "trainer_grouped",
            "ner_accel",
            "bare",
            "bare_unpadded",
            "--scaling",
            "3",
            "--threads",
            "1",
            "--output",
            str(output),
        ]
    )
    assert json.loads(output.read_text())["summary"].keys() == {
        "seed",
        "trainer_grouped",
        "ner_accel",
        "bare",
        "bare_unpadded",
    }
    assert "| ner_accel |" in output.with_suffix(".md").read_text()
    for config in ("seed", "trainer_grouped", "ner_accel"):
        run = next(r for r in report["runs"] if r["config"] == config)
        assert run["eval_sentences"] == 3 and 0 < run["padding_efficiency"] <= 1 and 0 <= run["f1"] <= 1
        assert run["real_tokens"] == next(r for r in report["runs"] if r["config"] == "seed")["real_tokens"]
        assert run["process_s"] > run["train_s"] + run["eval_s"]  # the whole process holds both
    assert report["scaling"][0]["train_sentences"] == 3
    resolved = resolve_mixed_precision("auto", use_cpu=True)  # every configuration at ner_accel's default
    assert {r["precision"] for r in report["runs"]} == {resolved}
    assert report["summary"]["seed"]["tokens_per_s_ratio"] == 1.0
    assert report["summary"]["seed"]["process_speedup"] == 1.0
    assert "whole process" in output.with_suffix(".md").read_text()


def test_bench_train_vary_seed_pairs_f1_by_seed(tmp_path, conll_dir):
    pytest.importorskip("seqeval")
    model = build_model_dir(tmp_path / "model")
    output = tmp_path / "seeds.json"
    argv = ["--model", str(model), "--data-dir", str(conll_dir), "--train-samples", "4", "--batch-size", "2"]
    argv += ["--rounds", "2", "--vary-seed", "--seed", "7", "--configs", "seed", "ner_accel", "--threads", "1"]
    report = load_benchmark("bench_train").main([*argv, "--output", str(output)])
    runs = {(r["config"], r["seed"]): r["f1"] for r in report["runs"]}
    assert sorted(runs) == [("ner_accel", 7), ("ner_accel", 8), ("seed", 7), ("seed", 8)]
    paired = report["summary"]["ner_accel"]["f1_paired"]
    assert paired["deltas"] == [runs["ner_accel", s] - runs["seed", s] for s in (7, 8)]
    assert "paired by seed" in output.with_suffix(".md").read_text()


def test_bench_gpu_cpu_path(tmp_path, conll_dir):
    model = build_model_dir(tmp_path / "model")
    report = load_benchmark("bench_gpu").main(
        [
            "--device",
            "cpu",
            "--model",
            str(model),
            "--data",
            str(conll_dir / "train.conll"),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch-sizes",
            "2",
            "--configs",
            "trainer",
            "ner_accel",
            "ner_accel_padded",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert [r["config"] for r in report["results"]] == ["trainer", "ner_accel", "ner_accel_padded"]
    assert all(r["tokens_per_s"] > 0 and 0 < r["padding_efficiency"] <= 1 for r in report["results"])
    assert (tmp_path / "gpu.json").is_file() and "| 2 | ner_accel |" in (tmp_path / "gpu.md").read_text()
