"""Both precision paths on any CPU, and a notebook's sequence of commands at different precisions in one process."""

from __future__ import annotations

import json

import pytest
import torch

from ner_accel import evaluate, predict, train
from ner_accel.training import precision

# .ci/run also runs these on the AVX2 bf16 kernels of a CPU with native bf16 (they round differently).
pytestmark = pytest.mark.numerics


def test_auto_resolves_to_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_mixed_precision("auto", use_cpu=True) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_mixed_precision("auto", use_cpu=True) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch's choice wins over the CPU's
    assert precision.resolve_mixed_precision("auto", use_cpu=True) == "bf16"
    assert precision.resolve_mixed_precision("no", use_cpu=True) == "no"


def run_args(model, data, out, name, mixed_precision):
    return ["--model", str(model), "--data-dir", str(data), "--output-dir", str(out), "--run-name", name,
            "--per-device-train-batch-size", "2", "--num-train-epochs", "2", "--logging-steps", "1",
            "--mixed-precision", mixed_precision]  # fmt: skip


def test_train_evaluate_predict_train_at_other_precisions_in_one_process(tiny_model, conll_dir, tmp_path, capsys):
    """As a notebook does it, without resetting anything in between: no 'restart your runtime'."""
    assert train.main(run_args(tiny_model, conll_dir, tmp_path, "bf16", "bf16")) == 0
    run = tmp_path / "bf16"
    assert json.loads((run / "train_config.json").read_text())["mixed_precision"] == "bf16"
    output = tmp_path / "eval.json"
    common = ["--model", str(run), "--data-dir", str(conll_dir), "--output", str(output)]
    assert evaluate.main([*common, "--mixed-precision", "no"]) == 0
    fp32 = json.loads(output.read_text())["models"][0]["results"]["data"]
    assert evaluate.main([*common, "--mixed-precision", "bf16"]) == 0
    bf16 = json.loads(output.read_text())["models"][0]["results"]["data"]
    trained = json.loads((run / "metrics.json").read_text())["final"]["data"]
    assert bf16["f1"] == trained["f1"] and bf16["per_type"] == trained["per_type"]  # same precision, same numbers
    assert fp32["sentences"] == bf16["sentences"] == 3
    assert predict.main(["--model", str(run), "Merkel fährt nach Leipzig"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"] == "Merkel fährt nach Leipzig"
    assert train.main(run_args(tiny_model, conll_dir, tmp_path, "fp32", "no")) == 0
    assert json.loads((tmp_path / "fp32" / "train_config.json").read_text())["mixed_precision"] == "no"


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_a_training_step_runs_at_each_cpu_precision(tiny_model_no_dropout, conll_dir, tmp_path, mixed_precision):
    """bf16 autocast works on every CPU (emulated where not native): both paths run on every CI machine."""
    assert train.main(run_args(tiny_model_no_dropout, conll_dir, tmp_path, "run", mixed_precision)) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluations"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["mixed_precision"] == mixed_precision
