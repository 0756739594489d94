"""Ctrl-C as users press it: acknowledged at once, honoured during evaluation and the final save, twice aborts cleanly.

The signals are real (os.kill on this process), sent from inside the phase that matters: the last evaluation, the
final save, a checkpoint being written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from ner_accel import train
from tests.conftest import run_training


def args(model, data, out, *extra):
    return ["--model", model, "--data-dir", data, "--output-dir", out, "--run-name", "run",
            "--per-device-train-batch-size", "2", "--num-train-epochs", "2", *extra]  # fmt: skip


def interrupt_during(monkeypatch, name: str, times: int = 1, call: int = 1) -> None:
    """Press Ctrl-C `times` times inside the `call`-th call of train.<name>, then let that call run."""
    original, calls = getattr(train, name), []

    def pressed(*a, **k):
        calls.append(1)
        if len(calls) == call:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return original(*a, **k)

    monkeypatch.setattr(train, name, pressed)


def test_ctrl_c_during_the_last_evaluation_is_acknowledged_and_stops_after_it(
    tiny_model, conll_dir, tmp_path, monkeypatch, capsys
):
    interrupt_during(monkeypatch, "score_sets", call=2)  # the evaluation at the end of the last epoch
    assert run_training(args(tiny_model, conll_dir, tmp_path)) == 130
    err = capsys.readouterr().err
    assert "Ctrl-C: stopping after this step, once it is saved; press Ctrl-C again to abort" in err
    assert "checkpoint saved to" in err and "--resume latest" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model").exists()
    assert run_training(args(tiny_model, conll_dir, tmp_path, "--resume", "latest")) == 0  # nothing left to train
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_ctrl_c_during_the_final_save_lets_it_complete_then_exits_130(
    tiny_model, conll_dir, tmp_path, monkeypatch, capsys
):
    interrupt_during(monkeypatch, "save_final")
    assert run_training(args(tiny_model, conll_dir, tmp_path)) == 130
    err = capsys.readouterr().err
    assert f"model saved to {tmp_path / 'run' / 'model'}" in err and "Traceback" not in err
    run = tmp_path / "run"
    assert (run / "model" / "model.safetensors").is_file() and json.loads((run / "metrics.json").read_text())["final"]


def test_a_second_ctrl_c_aborts_without_a_traceback_and_keeps_the_checkpoints(
    tiny_model, conll_dir, tmp_path, monkeypatch, capsys
):
    extra = ("--checkpoint-steps", "1", "--num-train-epochs", "3")
    original = train.Checkpoints.save
    calls = []

    def save_pressed_twice(self, accelerator, state):  # while the 4th checkpoint is being written
        calls.append(state.step)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, accelerator, state)

    monkeypatch.setattr(train.Checkpoints, "save", save_pressed_twice)
    assert run_training(args(tiny_model, conll_dir, tmp_path, *extra)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("aborted; checkpoints already written are complete") and "Traceback" not in "\n".join(err)
    monkeypatch.setattr(train.Checkpoints, "save", original)
    latest = (tmp_path / "run" / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-0000003"  # the one being written when the run aborted never became the latest
    assert run_training(args(tiny_model, conll_dir, tmp_path, *extra, "--resume", "latest")) == 0


def test_ctrl_c_in_a_real_process_is_acknowledged_before_the_step_ends(tiny_model, conll_dir, tmp_path):
    """A real terminal's Ctrl-C: the process says so at once and exits 130 with a checkpoint and no traceback."""
    command = [sys.executable, "-m", "ner_accel.train", *map(str, args(tiny_model, conll_dir, tmp_path))]
    command += ["--num-train-epochs", "200", "--logging-steps", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    latest = tmp_path / "run" / "checkpoints" / "latest"
    for _line in process.stderr:  # wait until training runs (the first evaluation's checkpoint exists)
        if latest.is_file():
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Ctrl-C: stopping after this step" in err and "Resume with the same command plus --resume latest" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
