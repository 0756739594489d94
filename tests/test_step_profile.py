"""benchmarks/step_profile.py runs ner_accel's real step on the tiny model and splits its time (no timing values)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

from ner_accel.modeling.loading import load_tokenizer


def test_step_profile_splits_every_timed_step(tiny_model, conll_dir, tmp_path):
    report = load_benchmark("step_profile").main(
        ["--model", str(tiny_model), "--data-dir", str(conll_dir), "--batch-size", "2", "--steps", "2"]
        + ["--warmup", "1", "--precisions", "no", "bf16", "--output", str(tmp_path / "split.json")]
    )
    assert [run["precision"] for run in report["runs"]] == ["no", "bf16"]
    assert (tmp_path / "split.json").is_file()
    vocabulary = len(load_tokenizer(str(tiny_model)))
    for run in report["runs"]:
        assert run["steps"] == 2 and run["warmup"] == 1
        phases = [run[phase] for phase in ("forward", "backward", "clip", "optimizer")]
        assert all(ms > 0 for ms in phases)
        assert run["step"] == pytest.approx(sum(phases))
        assert sum(run["share"].values()) == pytest.approx(1.0)
        # conftest's 5 training sentences in batches of 2: the steps are real batches, not empty ones
        assert 0 < run["real_tokens_per_step"] <= run["padded_tokens_per_step"]
        split = run["embedding_optimizer"]
        # the tiny model's word embeddings (hidden 32): AdamW updates the rows the training data uses, not the matrix
        assert split["embedding_matrix_parameters"] == vocabulary * 32
        assert 0 < split["embedding_parameters"] == split["trained_rows"] * 32 < vocabulary * 32
        assert split["embedding"] > 0 and split["rest"] > 0 and 0 < split["embedding_share"] < 1
