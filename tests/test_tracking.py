"""Experiment tracking: TensorBoard event files read back with tensorboard's own reader, also across a resume."""

from __future__ import annotations

import json
import shutil

import pytest

from ner_accel.reporting.tracking import evaluation_scalars, resolve_trackers
from tests.conftest import run_training

pytest.importorskip("tensorboard", reason="the tensorboard package (dev extra) is needed to read event files")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def args(model, data, out, report_to=("tensorboard",)):
    return ["--model", model, "--data-dir", data, "--output-dir", out, "--run-name", "run", "--report-to", *report_to,
            "--per-device-train-batch-size", "2", "--num-train-epochs", "4", "--logging-steps", "1",
            "--checkpoint-steps", "2", "--keep-checkpoints", "9", "--seed", "3", "--mixed-precision", "no"]  # fmt: skip


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the run's TensorBoard directory, as (step, value) pairs in reading order."""
    events = EventAccumulator(str(run_dir / "logs" / "run"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_holds_every_logged_value_at_its_step(tiny_model, conll_dir, tmp_path):
    assert run_training(args(tiny_model, conll_dir, tmp_path)) == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["evaluations"]
    found = scalars(tmp_path / "run")
    losses = [(e["step"], e["loss"]) for e in history if "loss" in e]
    assert [step for step, _ in found["train/loss"]] == list(range(1, 13))
    assert [value for _, value in found["train/loss"]] == pytest.approx([loss for _, loss in losses])  # float32
    assert [step for step, _ in found["train/learning_rate"]] == list(range(1, 13))
    evaluations = [e for e in history if "validation" in e]
    assert [step for step, _ in found["eval/data/f1"]] == [e["step"] for e in evaluations] == [3, 6, 9, 12]
    assert found["eval/data/f1"][-1][1] == pytest.approx(evaluations[-1]["validation"]["data"]["f1"])
    assert {"eval/data/LOC/f1", "eval/data/ORG/f1", "eval/data/PER/f1", "eval/data/precision"} <= found.keys()


def test_a_resumed_run_continues_the_same_curves(tiny_model, conll_dir, tmp_path):
    """Stopped after logging step 12, resumed from step 4: steps 5-12 are logged again and must not appear twice."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_training(args(tiny_model, conll_dir, straight)) == 0
    assert run_training(args(tiny_model, conll_dir, resumed)) == 0
    # As if that run had been killed after logging step 7: its events stay; it resumes from its step-4 checkpoint.
    run = resumed / "run"
    shutil.rmtree(run / "model")
    (run / "metrics.json").unlink()
    checkpoint = run / "checkpoints" / "step-0000004"
    assert run_training([*args(tiny_model, conll_dir, resumed), "--resume", str(checkpoint)]) == 0
    assert len(list((run / "logs" / "run").glob("events.out.tfevents.*"))) == 2
    reference, found = scalars(straight / "run"), scalars(run)
    for tag in ("train/loss", "train/learning_rate", "eval/data/f1"):
        assert [step for step, _ in found[tag]] == [step for step, _ in reference[tag]], tag
        assert [value for _, value in found[tag]] == pytest.approx([value for _, value in reference[tag]]), tag


def test_a_tracker_that_is_not_installed_is_refused_before_any_work(tiny_model, conll_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    missing = next((name for name in ("aim", "clearml", "comet_ml", "wandb", "mlflow") if not _installed(name)), None)
    if missing is None:
        pytest.skip("every tracker package is installed here")
    assert run_training(args(tiny_model, conll_dir, tmp_path, report_to=("tensorboard", missing))) == 2
    assert (
        f"--report-to {missing}: the {missing} package is not installed; pip install {missing}"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_report_to_names():
    assert resolve_trackers(["none"]) == [] and resolve_trackers(["tensorboard", "tensorboard"]) == ["tensorboard"]
    assert "tensorboard" in resolve_trackers(["all"])
    results = {"de": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "per_type": {"PER": {"f1": 0.4}}}, "mean_f1": 0.3}
    assert evaluation_scalars(results) == {
        "eval/de/precision": 0.5, "eval/de/recall": 0.25, "eval/de/f1": 1 / 3, "eval/de/PER/f1": 0.4, "eval/mean_f1": 0.3
    }  # fmt: skip
