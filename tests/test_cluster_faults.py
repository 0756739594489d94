"""The faults of a real cluster and of long jobs, with real processes: a newest checkpoint damaged after it was
written (under the default --keep-checkpoints), a rank SIGKILLed under `accelerate launch` (gloo, the code path of
NCCL), SIGKILLs at six instants of one run, each followed by the command its messages name; and the checkpoints that
make keeping two cheap: the frozen word-embedding matrix left out, checked by its sha256 on load.

Every process runs with a deadline and in its own process group, which is killed whatever the outcome.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import TRAIN, VALIDATION, run_training
from safetensors.torch import load_file
from test_distributed import sentences  # the same seeded corpus as the 2-process equivalence tests

from ner_accel.errors import UsageError
from ner_accel.modeling.heads import BertForTokenClassification
from ner_accel.modeling.trained_rows import train_only_used_rows
from ner_accel.rundir.artifacts import is_finished
from ner_accel.rundir.checkpoint import FROZEN, Checkpoints, find_checkpoint
from ner_accel.rundir.integrity import STATE_FILE, tensor_digest, verify
from ner_accel.training.trainer_state import TrainerState

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 300  # seconds any one command may take, on a loaded CI machine


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def write_corpus(directory: Path, train: int, validation: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.conll").write_text(sentences(train, seed=0), encoding="utf-8")
    (directory / "validation.conll").write_text(sentences(validation, seed=1), encoding="utf-8")
    return directory


def args_for(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--data-dir", str(data), "--output-dir", str(out), "--run-name", "run",
            "--seed", "7", "--logging-steps", "1", "--mixed-precision", "no", *map(str, extra)]  # fmt: skip


def final_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["final"]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def environment(cache: Path) -> dict[str, str]:
    # COLUMNS: rich wraps log lines at the terminal width; wide lines keep each message on one line.
    return {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "COLUMNS": "400"}  # fmt: skip


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc (Linux)."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            children = [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


class Command:
    """A command in its own process group; its stdout and stderr, merged, read as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        self.started = time.monotonic()
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.process.stdout.fileno(), 1 << 16):
            self.chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float = DEADLINE) -> bool:
        """Poll `ready` every 2 ms: True once it holds, False if the command ended first."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                return ready()
            assert time.monotonic() < deadline, f"timed out waiting; output:\n{self.output[-4000:]}"
            time.sleep(0.002)
        return True

    def finish(self, timeout: float = DEADLINE) -> int:
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code

    def close(self) -> None:
        """Kill whatever is left of it: the process group, and any descendant that left it."""
        stray = descendants(self.process.pid)
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        self.reader.join(10)
        self.process.stdout.close()


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ner_accel.train", *args]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: the newest `keep` that verify stay; frozen parameters left out and checked


@pytest.fixture
def accelerator_with(tiny_model):
    """make(rows) -> a fresh one-process Accelerator with the tiny model (only `rows` of its word embeddings
    trained, the rest frozen), AdamW after one step, prepared as train.py has them: a new process, each call."""

    def make(rows=(5, 6, 7, 8), change_frozen: bool = False):
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(cpu=True)
        torch.manual_seed(0)
        model = BertForTokenClassification.from_pretrained(tiny_model)
        if change_frozen:  # the model files changed under the run
            with torch.no_grad():
                model.get_input_embeddings().weight[-1] += 1
        train_only_used_rows(model, np.array(rows))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model, optimizer = accelerator.prepare(model, optimizer)
        ids = torch.tensor([[2, 5, 6, 9, 3]])
        model(input_ids=ids, labels=torch.tensor([[-100, 1, 2, 0, -100]])).loss.backward()
        optimizer.step()
        return accelerator, model, optimizer

    yield make
    AcceleratorState._reset_state(reset_partial_state=True)


EMBEDDING = "bert.embeddings.word_embeddings"


def test_a_checkpoint_leaves_out_the_frozen_matrix_and_loads_back_what_was_trained(accelerator_with, tmp_path):
    accelerator, model, optimizer = accelerator_with()
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    full = Checkpoints(tmp_path / "full", keep=2).save(accelerator, TrainerState(step=1))
    slim = Checkpoints(tmp_path / "slim", keep=2, leave_out_frozen=True).save(accelerator, TrainerState(step=1))
    assert f"{EMBEDDING}.weight" in load_file(full / "model.safetensors")
    stored = load_file(slim / "model.safetensors")
    assert f"{EMBEDDING}.weight" not in stored and {f"{EMBEDDING}.trained_rows", f"{EMBEDDING}.rows"} <= stored.keys()
    assert sorted(stored) == sorted(name for name in saved if name != f"{EMBEDDING}.weight")
    frozen = json.loads((slim / STATE_FILE).read_text())[FROZEN]
    assert frozen == {f"{EMBEDDING}.weight": tensor_digest(saved[f"{EMBEDDING}.weight"])}
    assert verify(slim) is None
    assert (slim / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size

    for checkpoint in (slim, full):  # a resumed process: the model as --model loads it, then the checkpoint
        accelerator, model, optimizer = accelerator_with()
        Checkpoints(tmp_path / "resumed", keep=2, leave_out_frozen=True).load(accelerator, checkpoint)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, saved[name], rtol=0, atol=0, msg=name)
        for key, value in optimizer.state_dict()["state"][0].items():
            torch.testing.assert_close(value, moments[key], rtol=0, atol=0, msg=key)


def test_a_checkpoint_whose_frozen_matrix_the_model_no_longer_has_is_refused(accelerator_with, tmp_path):
    accelerator, _, _ = accelerator_with()
    slim = Checkpoints(tmp_path / "run", keep=2, leave_out_frozen=True).save(accelerator, TrainerState(step=1))
    accelerator, _, _ = accelerator_with(change_frozen=True)
    with pytest.raises(UsageError) as refused:
        Checkpoints(tmp_path / "run", keep=2, leave_out_frozen=True).load(accelerator, slim)
    assert str(refused.value) == (
        f"--resume {slim}: {EMBEDDING}.weight of this --model is not the one the run was trained with (the checkpoint "
        "keeps the sha256 of this frozen parameter, not its values); resume with the model files the run started "
        "from, or start a new run: the same command without --resume, plus --overwrite"
    )
    accelerator, _, _ = accelerator_with(rows=(5, 6))  # other trained rows: a parameter of another shape
    with pytest.raises(Exception, match="trained_rows"):
        Checkpoints(tmp_path / "run", keep=2, leave_out_frozen=True).load(accelerator, slim)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_rotation_keeps_the_good_checkpoint_before_a_damaged_one(accelerator_with, tmp_path, caplog):
    accelerator, _, _ = accelerator_with()
    checkpoints = Checkpoints(tmp_path / "run", keep=2)
    for step in (1, 2):
        checkpoints.save(accelerator, TrainerState(step=step))
    truncate(checkpoints.path(2) / "model.safetensors")  # damaged after it was written
    checkpoints.save(accelerator, TrainerState(step=3))
    assert sorted(p.name for p in checkpoints.root.glob("step-*")) == ["step-0000001", "step-0000002", "step-0000003"]
    assert any("checkpoint step-0000002 is damaged (" in r.getMessage() for r in caplog.records)
    checkpoints.save(accelerator, TrainerState(step=4))
    assert sorted(p.name for p in checkpoints.root.glob("step-*")) == ["step-0000003", "step-0000004"]
    truncate(checkpoints.path(4) / "model.safetensors")
    assert find_checkpoint("latest", tmp_path / "run") == checkpoints.path(3)  # what --resume latest takes


def test_a_resume_from_an_older_checkpoint_abandons_the_newer_ones_and_keeps_its_own(accelerator_with, tmp_path):
    """Resumed from step 1 with steps 2 and 3 on disk, the run saves step 2 again: step 3 belongs to the timeline
    the resume left. Rotation used to keep the newest by name, deleting the step just written (with keep 1)."""
    accelerator, _, _ = accelerator_with()
    first = Checkpoints(tmp_path / "run", keep=1)
    for step in (1, 2, 3):
        first.save(accelerator, TrainerState(step=step))
        first.keep = 3  # this first run keeps all three
    resumed = Checkpoints(tmp_path / "run", keep=1)
    resumed.save(accelerator, TrainerState(step=2, history=[{"step": 2, "loss": 0.5}]))
    assert sorted(p.name for p in resumed.root.glob("step-*")) == ["step-0000002"]
    assert resumed.latest() == resumed.path(2) and verify(resumed.path(2)) is None


# ---------------------------------------------------------------------------------------------------------------
# A newest checkpoint damaged after it was written, under the defaults


@pytest.fixture(scope="module")
def small_run(tiny_model, tmp_path_factory) -> dict:
    """The uninterrupted run of 12 steps (5 sentences in batches of 2, 4 epochs), a checkpoint at each step; and
    the same command as a real process, stopped by SIGTERM once step 4's checkpoint is complete (exit 143)."""
    root = tmp_path_factory.mktemp("damaged")
    data = root / "data"
    data.mkdir()
    (data / "train.conll").write_text(TRAIN, encoding="utf-8")
    (data / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    extra = ("--per-device-train-batch-size", "2", "--num-train-epochs", "4", "--checkpoint-steps", "1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(root / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        assert run_training(args_for(tiny_model, data, root / "straight", *extra)) == 0
    killed = Command(train_command(*args_for(tiny_model, data, root / "killed", *extra)), environment(root / "cache"))
    latest = root / "killed" / "run" / "checkpoints" / "latest"
    try:
        reached = killed.wait_until(lambda: latest.is_file() and latest.read_text().strip() >= "step-0000004")
        assert reached, killed.output[-4000:]
        os.kill(killed.process.pid, signal.SIGTERM)
        assert killed.finish() == 128 + signal.SIGTERM, killed.output[-4000:]
    finally:
        killed.close()
    return {"data": data, "extra": extra, "straight": root / "straight" / "run", "killed": root / "killed" / "run"}


def damaged_copy(small_run: dict, destination: Path) -> tuple[Path, list[Path]]:
    """A copy of the killed run's directory, and its checkpoints, newest first."""
    run = destination / "run"
    shutil.copytree(small_run["killed"], run, ignore=shutil.ignore_patterns(".*"))  # a save in flight, the lock
    return run, sorted(run.glob("checkpoints/step-*"), reverse=True)


def test_the_defaults_survive_a_newest_checkpoint_damaged_after_it_was_written(
    small_run, tiny_model, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "400")
    run, checkpoints = damaged_copy(small_run, tmp_path)
    assert len(checkpoints) == 2  # the default --keep-checkpoints: the newest and the one before it
    newest, previous = checkpoints
    truncate(newest / "model.safetensors")
    args = args_for(tiny_model, small_run["data"], tmp_path, *small_run["extra"])
    assert run_training(args) == 2
    assert last_line(capsys.readouterr().err) == (
        f"error: {run}: holds checkpoints of an unfinished run; pass --resume latest to continue it from "
        f"{previous.name}, or --overwrite to start again"
    )
    assert run_training([*args, "--resume", "latest"]) == 0
    log = capsys.readouterr().err
    assert f"--resume latest: skipping {newest.name}: {newest / 'model.safetensors'} has " in log
    assert f"resumed from {previous}" in log
    assert final_metrics(run) == final_metrics(small_run["straight"])


def test_when_no_checkpoint_verifies_each_refusal_names_overwrite_and_it_works(small_run, tiny_model, tmp_path, capsys):
    run, checkpoints = damaged_copy(small_run, tmp_path)
    for checkpoint in checkpoints:
        truncate(checkpoint / "model.safetensors")
    newest = checkpoints[0] / "model.safetensors"
    args = args_for(tiny_model, small_run["data"], tmp_path, *small_run["extra"])
    assert run_training([*args, "--resume", "latest"]) == 2
    message = last_line(capsys.readouterr().err)
    assert re.fullmatch(
        rf"error: --resume latest: no checkpoint in {re.escape(str(run / 'checkpoints'))} verifies \(the newest, "
        rf"{checkpoints[0].name}: {re.escape(str(newest))} has \d+ bytes, \d+ were written\), so nothing can be "
        r"resumed; start it again with the same command without --resume, plus --overwrite",
        message,
    ), message
    assert run_training(args) == 2
    message = last_line(capsys.readouterr().err)
    assert message.startswith(f"error: {run}: holds checkpoints of an unfinished run, and none of them verifies (the ")
    assert message.endswith("); pass --overwrite to start again")
    assert run_training([*args, "--overwrite"]) == 0
    assert final_metrics(run) == final_metrics(small_run["straight"])


def test_resume_latest_in_a_directory_without_checkpoints_names_the_command_that_starts_it(
    tiny_model, conll_dir, tmp_path, capsys
):
    args = args_for(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "1")
    assert run_training([*args, "--resume", "latest"]) == 2
    assert last_line(capsys.readouterr().err) == (
        f"error: --resume latest: {tmp_path / 'run'} holds no checkpoint, so there is nothing to resume; start it "
        "with the same command without --resume"
    )
    assert run_training(args) == 0
    assert run_training([*args, "--resume", "latest"]) == 2
    assert last_line(capsys.readouterr().err) == (
        f"error: {tmp_path / 'run'}: already holds a finished run, so there is nothing to resume; train it again "
        "with the same command without --resume, plus --overwrite (or pass another --run-name)"
    )
    assert run_training([*args, "--overwrite"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# A rank SIGKILLed under accelerate launch (2 CPU processes over gloo)


def worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the worker process with RANK=`rank` below the launcher, from its environment."""
    for pid in descendants(launcher):
        try:
            variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if f"RANK={rank}".encode() in variables:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0])
def test_a_rank_sigkilled_after_the_first_checkpoint_takes_the_job_down_and_resume_finishes(rank, tiny_model, tmp_path):
    data = write_corpus(tmp_path / "data", train=60, validation=11)
    args = args_for(tiny_model, data, tmp_path / "out", "--per-device-train-batch-size", "4", "--max-length", "16",
                    "--num-train-epochs", "4", "--checkpoint-steps", "2")  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch" / "cpu.yaml"),
              "-m", "ner_accel.train", *args]  # fmt: skip
    env = {**environment(tmp_path / "cache"), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "out" / "run"
    job = Command(launch, env)
    try:
        assert job.wait_until((run / "checkpoints" / "latest").is_file), job.output[-4000:]
        victim = worker_of_rank(job.process.pid, rank)
        survivor = worker_of_rank(job.process.pid, 1 - rank)
        assert victim and survivor, job.output[-4000:]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        job.wait_until(lambda: not alive(survivor), timeout=60)
        survivor_exit = time.monotonic() - killed
        code = job.finish(timeout=60)
        launcher_exit = time.monotonic() - killed
    finally:
        job.close()
    log = job.output
    print(f"rank {rank} SIGKILLed: the survivor exited after {survivor_exit:.2f} s, the launcher after "
          f"{launcher_exit:.2f} s")  # fmt: skip
    # torchrun gives the survivors 30 s after its SIGTERM before it kills them: they left on their own, at once.
    assert code == 1 and launcher_exit < 20, log[-4000:]
    assert f"rank      : {rank} (local_rank: {rank})" in log and f"Signal 9 (SIGKILL) received by PID {victim}" in log
    latest = Checkpoints(run, keep=1).latest()
    assert latest is not None and verify(latest) is None and not is_finished(run)

    resumed = Command([*launch, "--resume", "latest"], env)
    try:
        assert resumed.finish() == 0, resumed.output[-4000:]
    finally:
        resumed.close()
    assert f"resumed from {latest}" in resumed.output and is_finished(run)
    evaluated = [e["step"] for e in json.loads((run / "metrics.json").read_text())["evaluations"] if "validation" in e]
    assert evaluated == [8, 16, 24, 32]


# ---------------------------------------------------------------------------------------------------------------
# SIGKILL at six instants of one run, each followed by the command the messages name

# Writes under the run directory take 0.2 s more each (a slow shared file system): a checkpoint and the final
# save then last long enough to be killed inside, on any machine.
SLOW_DISK = """
import sys, time
from pathlib import Path
import accelerate.utils.other, torch, transformers.modeling_utils
run_dir = Path(sys.argv[1]).absolute()
def slowed(write):
    def slow_write(obj, path, *args, **kwargs):
        if Path(path).absolute().is_relative_to(run_dir):
            time.sleep(0.2)
        return write(obj, path, *args, **kwargs)
    return slow_write
torch.save = slowed(torch.save)
for module in (accelerate.utils.other, transformers.modeling_utils):
    module.safe_save_file = slowed(module.safe_save_file)
from ner_accel.train import main
sys.exit(main(sys.argv[2:]))
"""

# 60 sentences in batches of 8: 8 steps an epoch, 3 epochs; evaluations at 16 and 24, checkpoints at 8, 16, 24.
KILLED_RUN = ("--per-device-train-batch-size", "8", "--max-length", "16", "--num-train-epochs", "3",
              "--checkpoint-steps", "8", "--eval-steps", "16")  # fmt: skip
SEED = 20261203
# Seeded delays after each instant's trigger (seconds): start-up counts from the start of the process.
DELAYS = {
    "start-up": [0.2, 0.4, 0.6],
    "tokenizing": [0.0, 0.01, 0.02],
    "mid-step": [0.0, 0.004, 0.008],
    "mid-checkpoint": [0.05, 0.15, 0.25],
    "evaluation": [0.0, 0.003, 0.006],
    "final save": [0.0, 0.03, 0.06],
}


def progress(output: str) -> int:
    """The last optimizer step the training progress bar shows (not the tokenizing bars: "Tokenizing train: ...")."""
    steps = re.findall(r"(?:^|[\r\n])train: +\d+%\|[^|]*\| (\d+)/\d+ \[", output)
    return int(steps[-1]) if steps else 0


def next_command(base: list[str], message: str) -> list[str]:
    """What a user does after a refusal: the command its one line names."""
    if "--resume latest" in message and "pass --resume latest" in message or "plus --resume latest" in message:
        return [*base, "--resume", "latest"]
    if "without --resume, plus --overwrite" in message or "pass --overwrite" in message:
        return [*base, "--overwrite"]
    assert "without --resume" in message, f"names no command: {message}"
    return base


def where_it_died(output: str, run: Path) -> str:
    """The instant a kill landed in, from what the run printed and what it left on disk."""
    if any(run.glob(".model.tmp-*")):
        return "final save"
    if any(run.glob("checkpoints/.step-*.tmp")):
        return "mid-checkpoint"
    if "process(es) x" not in output:  # the banner, printed once set-up is done
        return "tokenizing" if "Tokenizing" in output else "start-up"
    step = progress(output)
    if step == 16 and "step 16: data" not in output:
        return "evaluation"
    return "mid-step"


@pytest.mark.slow
def test_sigkill_at_six_instants_then_the_named_commands_end_with_the_uninterrupted_f1(tiny_model, tmp_path):
    data = write_corpus(tmp_path / "data", train=60, validation=800)  # an evaluation long enough to be killed in
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache-straight"))
        assert run_training(args_for(tiny_model, data, tmp_path / "straight", *KILLED_RUN)) == 0
    out = tmp_path / "out"
    run = out / "run"
    base = args_for(tiny_model, data, out, *KILLED_RUN)
    triggers: dict[str, Callable[[Command], bool]] = {
        "start-up": lambda c: True,
        "tokenizing": lambda c: "Tokenizing" in c.output,
        "mid-step": lambda c: progress(c.output) >= 9,  # 7 steps before the next save
        "mid-checkpoint": lambda c: any(run.glob("checkpoints/.step-*.tmp")),
        "evaluation": lambda c: progress(c.output) >= 16,
        "final save": lambda c: any(run.glob(".model.tmp-*")),
    }
    rng = random.Random(SEED)
    delays = {instant: rng.choice(choices) for instant, choices in DELAYS.items()}
    counts = {"commands": 0, "kills": 0, "resumed": 0, "refusals": 0}
    landed, commands, command = [], [], base
    for instant in [*DELAYS, None]:
        while True:
            commands.append(command[len(base) :])
            counts["commands"] += 1
            started = Command([sys.executable, "-c", SLOW_DISK, str(run), *command], environment(tmp_path / "cache"))
            try:
                if instant is not None and started.wait_until(lambda c=started, i=instant: triggers[i](c)):
                    time.sleep(delays[instant])
                    os.kill(started.process.pid, signal.SIGKILL)
                    assert started.finish() == -signal.SIGKILL
                    counts["resumed"] += "resumed from" in started.output
                    break
                code = started.finish()
            finally:
                started.close()
            output = started.output
            assert "Traceback" not in output, output[-4000:]
            counts["resumed"] += "resumed from" in output
            if code == 0:
                assert instant is None, f"the run finished before the {instant} instant: {commands}"
                break
            # A refusal: exit 2, one line, naming the next command.
            assert code == 2 and len(re.findall(r"^error: ", output, re.M)) == 1, output[-4000:]
            counts["refusals"] += 1
            command = next_command(base, last_line(output))
        if instant is None:
            break
        counts["kills"] += 1
        landed.append((instant, where_it_died(started.output, run)))
        latest = Checkpoints(run, keep=1).latest()
        assert latest is None or verify(latest) is None, (instant, latest, verify(latest))
        assert not is_finished(run), instant
        command = [*base, "--resume", "latest"]  # what one does after a crash
    print(f"delays {delays}; commands {commands}; {counts}")
    assert landed == [(instant, instant) for instant in DELAYS], landed
    assert final_metrics(run) == final_metrics(tmp_path / "straight" / "run")
    assert counts["kills"] == 6 and counts["refusals"] >= 1 and counts["resumed"] >= 4
