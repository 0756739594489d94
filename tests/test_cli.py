"""The first hour of a new user: --help that reads cleanly, short errors for typos, natural mistakes named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAIN, VALIDATION, run_training

from ner_accel import evaluate, predict

ROOT = Path(__file__).resolve().parents[1]


def command_output(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"ner_accel.{module}", *args], capture_output=True, text=True)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_help_names_the_command_and_shows_each_flag_once(command):
    done = command_output(command, "--help")
    assert done.returncode == 0
    text = done.stdout
    assert text.startswith(f"usage: python -m ner_accel.{command} ")
    flags = [line.split()[0] for line in text.splitlines() if line.startswith("  --")]
    assert flags and all("_" not in flag for flag in flags)  # --data-dir, never also --data_dir
    words = " ".join(text.split())
    assert "(default: None)" not in words and "at most 512). (default" not in words  # each default said once


def test_train_help_explains_switches_and_their_negations():
    text = command_output("train", "--help").stdout
    assert "  --no-group-by-length  Turn --group-by-length off." in text
    assert "[GROUP_BY_LENGTH]" not in text and "  --overwrite " in text  # a switch shows no value placeholder


def test_evaluate_help_keeps_its_examples_on_their_own_lines():
    lines = command_output("evaluate", "--help").stdout.splitlines()
    assert any(line.strip() == "--error-analysis" for line in lines)  # not run into the previous example line


@pytest.mark.parametrize(
    "command, args, expected",
    [
        ("train", ["--num-train-epoch", "3"], "did you mean --num-train-epochs?"),
        ("train", ["--learnig-rate", "1e-4"], "did you mean --learning-rate?"),
        ("evaluate", ["--model", "m", "--data-dir", "d", "--eror-analysis"], "did you mean --error-analysis?"),
        ("predict", ["--model", "m", "--batchsize", "2", "text"], "did you mean --batch-size?"),
    ],
)
def test_a_typo_is_one_line_with_the_closest_flag(command, args, expected):
    done = command_output(command, *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and expected in done.stderr  # no screen of usage before it
    assert done.stderr.startswith(f"python -m ner_accel.{command}: error: unrecognized arguments:")


def test_no_abbreviations_and_lr_is_the_learning_rate():
    from ner_accel.options.train_config import parse_config

    with pytest.raises(SystemExit):
        parse_config(["--num-train-epoch", "3"])  # once silently taken as --num-train-epochs
    assert parse_config(["--lr", "3e-5"]).learning_rate == 3e-5


def write_data(directory: Path, names: dict[str, str]) -> Path:
    directory.mkdir(parents=True)
    for name, text in names.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_a_split_file_given_as_data_dir_is_named(tiny_model, conll_dir, tmp_path, capsys):
    train_file = conll_dir / "train.conll"
    assert run_training(["--model", tiny_model, "--data-dir", train_file, "--output-dir", tmp_path / "out"]) == 2
    assert (
        f"--data-dir {train_file}: is a file; pass the directory that holds it ({conll_dir})" in capsys.readouterr().err
    )
    assert evaluate.main(["--model", str(tiny_model), "--data-dir", str(train_file)]) == 2
    assert "is a file; pass the directory that holds it" in capsys.readouterr().err


def test_a_models_config_file_given_as_model_is_named(tiny_model, conll_dir, tmp_path, capsys):
    config = tiny_model / "config.json"
    assert run_training(["--model", config, "--data-dir", conll_dir, "--output-dir", tmp_path / "out"]) == 2
    err = capsys.readouterr().err
    assert f"--model {config}: is a file; pass the model directory that holds it ({tiny_model})" in err
    assert "Repo id" not in err
    assert predict.main(["--model", str(config), "text"]) == 2


def test_conll2003_split_names_train_valid_test_and_dev(tiny_model, tmp_path):
    conll2003 = write_data(
        tmp_path / "conll2003", {"train.txt": TRAIN, "valid.txt": VALIDATION, "test.txt": VALIDATION}
    )
    args = ["--model", tiny_model, "--data-dir", conll2003, "--output-dir", tmp_path / "out", "--num-train-epochs", "1"]
    assert run_training([*args, "--run-name", "c"]) == 0
    output = tmp_path / "test.json"
    run = tmp_path / "out" / "c"
    assert (
        evaluate.main(["--model", str(run), "--data-dir", str(conll2003), "--split", "test", "--output", str(output)])
        == 0
    )
    assert json.loads(output.read_text())["models"][0]["results"]["conll2003"]["sentences"] == 3
    dev = write_data(tmp_path / "dev" / "conll2003", {"train.conll": TRAIN, "dev.conll": VALIDATION})
    assert run_training([*args[:3], dev, *args[4:], "--run-name", "d"]) == 0


def test_cpu_launch_recipe_without_its_variable_is_one_job(tiny_model, conll_dir, tmp_path):
    """launch/cpu.yaml as written, without ACCELERATE_USE_CPU=1: two processes train together, not each alone."""
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "cache")
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [launcher, "launch", "--config_file", str(ROOT / "launch" / "cpu.yaml"), "-m", "ner_accel.train",
               "--model", str(tiny_model), "--data-dir", str(conll_dir), "--output-dir", str(tmp_path / "out"),
               "--num-train-epochs", "1", "--per-device-train-batch-size", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = " ".join(done.stderr.split())  # rich wraps its lines
    assert "2 process(es) x 2 x 1 accumulation" in log and "1 process(es)" not in log
    (config,) = (tmp_path / "out").glob("*/train_config.json")
    assert json.loads(config.read_text())["num_processes"] == 2


def test_what_a_run_writes_takes_the_users_umask(tiny_model, conll_dir, tmp_path):
    """A colleague on a shared file system can read the model: no private staging modes survive the renames."""
    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path / "out", "--num-train-epochs", "1"]
    previous = os.umask(0o022)
    try:
        assert run_training(args) == 0
    finally:
        os.umask(previous)
    (run,) = (tmp_path / "out").iterdir()
    modes = {str(p.relative_to(run)): p.stat().st_mode & 0o777 for p in [run, *run.rglob("*")]}
    assert modes["model"] == modes["checkpoints"] == 0o755 and modes["model/model.safetensors"] == 0o644
    assert {mode for path, mode in modes.items() if (run / path).is_file()} == {0o644}
    assert {mode for path, mode in modes.items() if (run / path).is_dir()} == {0o755}


def test_the_end_of_run_summary_says_where_things_are_and_what_they_take(tiny_model, conll_dir, tmp_path, capsys):
    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path, "--run-name", "r"]
    assert run_training([*args, "--num-train-epochs", "1"]) == 0
    summary = " ".join(capsys.readouterr().err.split())  # rich wraps the line
    assert "done in" in summary and "sentences/s" in summary and "F1" in summary
    assert (
        f"model: {tmp_path / 'r' / 'model'} (" in summary
        and f"checkpoints: {tmp_path / 'r' / 'checkpoints'} (" in summary
    )
    assert "MiB" in summary
