"""Interrupted runs lose nothing: resume equals an uninterrupted run; SIGTERM checkpoints; saves are atomic."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ner_accel.rundir.files import atomic_write
from tests.conftest import run_training


def args_for(model, data, out, *extra):
    # 5 sentences, batch 2 -> 3 optimizer steps an epoch; dropout stays on, so RNG restore is exercised too.
    return [
        "--model",
        model,
        "--data-dir",
        data,
        "--output-dir",
        out,
        "--run-name",
        "run",
        "--seed",
        "7",
        "--per-device-train-batch-size",
        "2",
        "--logging-steps",
        "1",
        *extra,
    ]


def final_state(out):
    run = out / "run"
    return load_file(run / "model" / "model.safetensors"), json.loads((run / "metrics.json").read_text())["final"]


def assert_same_run(a, b):
    weights_a, metrics_a = a
    weights_b, metrics_b = b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_a[name], weights_b[name], rtol=0, atol=0, msg=name)
    assert metrics_a == metrics_b


@pytest.fixture(scope="module")
def straight(tiny_model, tmp_path_factory):
    """The uninterrupted reference: 4 epochs, 12 steps, a checkpoint every 2 steps (all kept)."""
    from tests.conftest import TRAIN, VALIDATION

    root = tmp_path_factory.mktemp("straight")
    data = root / "data"
    data.mkdir()
    (data / "train.conll").write_text(TRAIN)
    (data / "validation.conll").write_text(VALIDATION)
    out = root / "out"
    assert (
        run_training(
            args_for(
                tiny_model, data, out, "--num-train-epochs", "4", "--checkpoint-steps", "2", "--keep-checkpoints", "20"
            )
        )
        == 0
    )
    return data, out


@pytest.mark.numerics
@pytest.mark.parametrize("step", [2, 4, 6])  # mid-epoch (epochs 1 and 2) and an epoch's last step
def test_resume_from_step_n_equals_the_straight_run(step, straight, tiny_model, tmp_path):
    data, out = straight
    checkpoint = out / "run" / "checkpoints" / f"step-{step:07d}"
    resumed = tmp_path / "resumed"
    assert (
        run_training(
            args_for(
                tiny_model, data, resumed, "--num-train-epochs", "4", "--checkpoint-steps", "2", "--resume", checkpoint
            )
        )
        == 0
    )
    assert_same_run(final_state(out), final_state(resumed))


def launch(model, data, out, *extra):
    command = [sys.executable, "-m", "ner_accel.train", *map(str, args_for(model, data, out, *extra))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(out, step, process, timeout=240):
    latest = out / "run" / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if latest.is_file() and int(latest.read_text().strip().split("-")[1]) >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint at step {step}: exit {process.poll()}")


def test_sigkill_at_a_random_step_then_resume_matches(straight, tiny_model, tmp_path):
    data, out = straight
    target = random.randint(1, 10)
    killed = tmp_path / "killed"
    process = launch(tiny_model, data, killed, "--num-train-epochs", "4", "--checkpoint-steps", "1")
    wait_for_checkpoint(killed, target, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "run" / "model").exists()
    assert (
        run_training(
            args_for(
                tiny_model, data, killed, "--num-train-epochs", "4", "--checkpoint-steps", "1", "--resume", "latest"
            )
        )
        == 0
    )
    straight_metrics = final_state(out)[1]
    assert final_state(killed)[1] == straight_metrics, f"killed after step {target}"


def test_sigterm_checkpoints_says_how_to_resume_and_exits_nonzero(straight, tiny_model, tmp_path):
    data, out = straight
    stopped = tmp_path / "stopped"
    process = launch(tiny_model, data, stopped, "--num-train-epochs", "4", "--checkpoint-steps", "1")
    wait_for_checkpoint(stopped, 3, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "--resume latest" in stderr and "checkpoint saved to" in stderr
    assert (stopped / "run" / "checkpoints" / "latest").is_file()
    assert (
        run_training(
            args_for(
                tiny_model, data, stopped, "--num-train-epochs", "4", "--checkpoint-steps", "1", "--resume", "latest"
            )
        )
        == 0
    )
    assert final_state(stopped)[1] == final_state(out)[1]


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint_latest(
    tiny_model, conll_dir, tmp_path, monkeypatch, capsys
):
    from accelerate import Accelerator

    original = Accelerator.save_state
    calls = []

    def failing_save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # write part of the second checkpoint, then die
            os.makedirs(output_dir, exist_ok=True)
            open(os.path.join(output_dir, "model.safetensors"), "wb").write(b"partial")
            raise OSError("disk full")
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", failing_save_state)
    code = run_training(args_for(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "2", "--checkpoint-steps", "1"))
    assert code == 1 and "(disk full); its partial files were removed" in capsys.readouterr().err
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step-0000001"
    assert (checkpoints / "step-0000001" / "trainer_state.json").is_file()
    assert not (checkpoints / "step-0000002").exists()
    monkeypatch.setattr(Accelerator, "save_state", original)
    assert run_training(args_for(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "2", "--resume", "latest")) == 0


def test_atomic_directory_keeps_the_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, directory=True) as staging:
        (staging / "weights").write_text("half")
        raise RuntimeError("crash while saving")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_model, conll_dir, tmp_path, capsys):
    code = run_training(
        args_for(
            tiny_model,
            conll_dir,
            tmp_path,
            "--num-train-epochs",
            "3",
            "--checkpoint-steps",
            "1",
            "--learning-rate",
            "1e30",
            "--max-grad-norm",
            "0",
        )
    )
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "non-finite training loss" in message and "up to step" in message and "--resume latest" in message
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()
    assert not (tmp_path / "run" / "model").exists()


def test_a_resumed_run_logs_the_uninterrupted_runs_loss_curve(tiny_model, conll_dir, tmp_path):
    """The loss since the last log is part of the checkpoint: step 5's logged loss spans steps 1-5 either way."""
    common = ["--num-train-epochs", "4", "--logging-steps", "5", "--checkpoint-steps", "2", "--keep-checkpoints", "9"]
    assert run_training(args_for(tiny_model, conll_dir, tmp_path / "straight", *common)) == 0
    checkpoint = tmp_path / "straight" / "run" / "checkpoints" / "step-0000004"  # steps 1-4 not logged yet
    assert run_training(args_for(tiny_model, conll_dir, tmp_path / "resumed", *common, "--resume", checkpoint)) == 0
    curves = []
    for out in ("straight", "resumed"):
        history = json.loads((tmp_path / out / "run" / "metrics.json").read_text())["evaluations"]
        curves.append([(entry["step"], entry["loss"]) for entry in history if "loss" in entry])
    assert [step for step, _ in curves[0]] == [5, 10]
    assert curves[0] == curves[1]
