"""The faults of a shared cluster: a full or failing disk, a damaged checkpoint, two runs in one directory, a kill
during the final save or while a checkpoint is replaced, a stale or damaged tokenization cache."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import tokenizers
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from ner_accel.data.corpus import CorpusOptions, load_corpus
from ner_accel.data.encoding import encode_dataset, tokenizer_fingerprint
from ner_accel.errors import WriteFailed
from ner_accel.modeling.heads import BertForTokenClassification
from ner_accel.modeling.loading import load_tokenizer
from ner_accel.rundir.artifacts import CONFIG_FILE, is_finished, save_final
from ner_accel.rundir.checkpoint import Checkpoints, find_checkpoint
from ner_accel.rundir.files import write_json
from ner_accel.rundir.integrity import STATE_FILE, verify
from ner_accel.rundir.run_lock import acquire, release_run_locks
from ner_accel.training.trainer_state import TrainerState
from tests.conftest import TRAIN, VALIDATION, XLMR_SHAPE, run_training

ROOT = Path(__file__).resolve().parents[1]
NO_SPACE = os.strerror(errno.ENOSPC)


def args_for(model, data, out, *extra) -> list:
    """5 sentences in batches of 2: 3 optimizer steps an epoch."""
    return ["--model", model, "--data-dir", data, "--output-dir", out, "--run-name", "run", "--seed", "7",
            "--per-device-train-batch-size", "2", "--logging-steps", "1", *extra]  # fmt: skip


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def evaluated_steps(run: Path) -> list[int]:
    return [e["step"] for e in json.loads((run / "metrics.json").read_text())["evaluations"] if "validation" in e]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@contextlib.contextmanager
def quiet_environment(tmp: Path):
    """What the autouse isolated_cache fixture gives a test, for module-scoped fixtures; wide log lines."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(tmp / "hf-cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("COLUMNS", "400")
        yield


def start_script(script: str, *argv) -> subprocess.Popen:
    """`python -c script argv...` in a fresh interpreter, as a user's command would run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    command = [sys.executable, "-c", script, *map(str, argv)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, run dir) of a finished 2-epoch run with a checkpoint at each of its 6 steps, all kept."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    (data / "train.conll").write_text(TRAIN, encoding="utf-8")
    (data / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    with quiet_environment(root):
        extra = ("--num-train-epochs", "2", "--checkpoint-steps", "1", "--keep-checkpoints", "10")
        assert run_training(args_for(tiny_model, data, root / "out", *extra)) == 0
    return data, root / "out" / "run"


# ---------------------------------------------------------------------------------------------------------------
# A full or failing disk: ENOSPC injected at each write the code makes


class FullFile:
    """A file open for writing on a disk that fills up: the first write puts a byte down, then ENOSPC."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, data):
        self.stream.write(data[:1])
        self.stream.flush()
        raise OSError(errno.ENOSPC, NO_SPACE)

    def __enter__(self) -> FullFile:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


class DiskFilling:
    """OSError(ENOSPC) at the n-th write under `root` (n = 0: only count), in each writer the code paths use:
    torch.save (optimizer, scheduler, random states), safetensors' save_file as accelerate and transformers
    import it (weights), tokenizers' Tokenizer.save (tokenizer.json) and open() for writing (JSON and text). A
    failing writer leaves a partial file, as a full disk does."""

    def __init__(self, monkeypatch, root: Path, fail_at: int = 0) -> None:
        self.root, self.fail_at, self.writes = root, fail_at, []
        real_open, real_torch_save, real_tokenizer_save = builtins.open, torch.save, tokenizers.Tokenizer.save
        import accelerate.utils.other
        import transformers.modeling_utils

        def partial_then_full(writer: str, path) -> None:
            if self.hit(writer, path):
                with real_open(path, "wb") as stream:
                    stream.write(b"partial")
                raise OSError(errno.ENOSPC, NO_SPACE)

        def opened(file, mode="r", *args, **kwargs):
            stream = real_open(file, mode, *args, **kwargs)
            writing = isinstance(file, (str, Path)) and any(flag in mode for flag in "wax+")
            return FullFile(stream) if writing and self.hit("open", file) else stream

        def torch_save(obj, f, *args, **kwargs):
            partial_then_full("torch.save", f)
            return real_torch_save(obj, f, *args, **kwargs)

        def save_file_of(real):
            def save_file(tensors, filename, *args, **kwargs):
                partial_then_full("safetensors", filename)
                return real(tensors, filename, *args, **kwargs)

            return save_file

        def tokenizer_save(tokenizer, path, *args, **kwargs):
            partial_then_full("Tokenizer.save", path)
            return real_tokenizer_save(tokenizer, path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(io, "open", opened)
        monkeypatch.setattr(torch, "save", torch_save)
        monkeypatch.setattr(tokenizers.Tokenizer, "save", tokenizer_save)
        for module in (accelerate.utils.other, transformers.modeling_utils):
            monkeypatch.setattr(module, "safe_save_file", save_file_of(module.safe_save_file))

    def hit(self, writer: str, path) -> bool:
        """Count a write under root; True when it is the one to fail."""
        if not Path(path).absolute().is_relative_to(self.root):
            return False
        self.writes.append((writer, Path(path).name))
        return len(self.writes) == self.fail_at


@pytest.fixture
def prepared(tiny_model):
    """A real one-process Accelerator with the tiny model, AdamW and a schedule prepared, as train.py has them."""
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    model = BertForTokenClassification.from_pretrained(tiny_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    yield accelerator
    AcceleratorState._reset_state(reset_partial_state=True)


def test_enospc_at_each_write_of_a_checkpoint_keeps_the_previous_one_and_no_partial_file(
    prepared, tmp_path, monkeypatch
):
    checkpoints = Checkpoints(tmp_path / "run", keep=5)
    root = checkpoints.root
    checkpoints.save(prepared, TrainerState(step=1))
    with monkeypatch.context() as patch:
        counted = DiskFilling(patch, tmp_path)
        checkpoints.save(prepared, TrainerState(step=2))
    shutil.rmtree(root / "step-0000002")
    (root / "latest").write_text("step-0000001\n")
    checkpoints.saved = None
    writers = {writer for writer, _ in counted.writes}
    assert {"torch.save", "safetensors", "open"} <= writers and len(counted.writes) >= 6, counted.writes
    for step, history in ((2, []), (1, [{"step": 1, "loss": 1.0}])):  # a new step, then a second save of step 1
        for fail_at in range(1, len(counted.writes) + 1):
            with monkeypatch.context() as patch, pytest.raises(WriteFailed) as failed:
                DiskFilling(patch, tmp_path, fail_at)
                checkpoints.save(prepared, TrainerState(step=step, history=history))
            where = f"write {fail_at} ({counted.writes[fail_at - 1]})"
            assert str(failed.value) == (
                f"cannot write checkpoint {root / f'step-{step:07d}'} ({NO_SPACE}); its partial files were removed"
            ), where
            assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000001"], where
            assert (root / "latest").read_text() == "step-0000001\n" and verify(root / "step-0000001") is None, where
            assert json.loads((root / "step-0000001" / STATE_FILE).read_text())["history"] == [], where
    checkpoints.save(prepared, TrainerState(step=1, history=[{"step": 1, "loss": 1.0}]))  # space again
    assert verify(root / "step-0000001") is None and leftovers(root) == []
    assert json.loads((root / "step-0000001" / STATE_FILE).read_text())["history"] == [{"step": 1, "loss": 1.0}]


def test_enospc_at_each_write_of_the_final_save_leaves_no_partial_model(trained, tiny_model, tmp_path, monkeypatch):
    _, source = trained
    metrics = json.loads((source / "metrics.json").read_text())
    model = BertForTokenClassification.from_pretrained(source / "model")
    tokenizer = load_tokenizer(str(source / "model"))
    run = tmp_path / "run"
    write_json(run / CONFIG_FILE, {})  # finish() writes the config first

    def final_save() -> None:
        save_final(run, model, tokenizer, metrics["evaluations"], metrics["final"])

    with monkeypatch.context() as patch:
        counted = DiskFilling(patch, tmp_path)
        final_save()
    writers = {writer for writer, _ in counted.writes}
    assert {"safetensors", "Tokenizer.save", "open"} <= writers, counted.writes
    assert is_finished(run)
    saved = load_file(run / "model" / "model.safetensors").keys()
    for fail_at in range(1, len(counted.writes) + 1):
        _, name = counted.writes[fail_at - 1]
        with monkeypatch.context() as patch, pytest.raises(WriteFailed) as failed:
            DiskFilling(patch, tmp_path, fail_at)
            final_save()
        if name in (".report.txt.tmp", ".metrics.json.tmp"):  # write_text's temporaries
            assert str(failed.value) == (
                f"cannot write {run / name[1:].removesuffix('.tmp')} ({NO_SPACE}); the partial file was removed"
            )
        else:
            assert str(failed.value) == (
                f"cannot write the final model to {run / 'model'} ({NO_SPACE}); its partial files were removed"
            ), name
        assert leftovers(run) == [] and not is_finished(run), name
        assert load_file(run / "model" / "model.safetensors").keys() == saved, name  # the earlier model, whole
    final_save()
    assert is_finished(run) and leftovers(run) == []


def test_enospc_writing_predict_output_or_json_is_one_line_and_leaves_the_old_file(
    trained, tmp_path, monkeypatch, capsys
):
    from ner_accel.predict import main as predict

    _, source = trained
    output = tmp_path / "entities.jsonl"
    output.write_text("earlier\n")
    with monkeypatch.context() as patch:
        DiskFilling(patch, tmp_path, fail_at=1)
        code = predict(["--model", str(source), "--output", str(output), "Merkel fährt nach Paris ."])
    assert code == 1
    assert last_line(capsys.readouterr().err) == (
        f"error: cannot write --output {output} ({NO_SPACE}); the partial file was removed"
    )
    assert output.read_text() == "earlier\n" and leftovers(tmp_path) == []
    with monkeypatch.context() as patch, pytest.raises(WriteFailed, match=re.escape(f"({NO_SPACE})")):
        DiskFilling(patch, tmp_path, fail_at=1)
        write_json(output, {"f1": 1.0})
    assert output.read_text() == "earlier\n" and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------
# A full disk for real: a small tmpfs


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a tmpfs of that size at tmp_path/disk; remount(size) grows it. Mounting needs root (or
    CAP_SYS_ADMIN): without it the test skips, and the ENOSPC injection tests above still run."""
    point = tmp_path / "disk"
    mounted = []

    def mount(size: str, *options: str) -> Path:
        point.mkdir(exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]), "tmpfs", str(point)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root")
        mounted.append(point)
        return point

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(point)], check=True)


def fill(disk: Path) -> Path:
    """Fill a file system to the last byte with one file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as stream:
        for size in (2**16, 1):
            with contextlib.suppress(OSError):
                while True:
                    stream.write(bytes(size))
    return filler


def test_a_full_disk_fails_in_one_line_removes_partial_files_and_resume_works_once_there_is_room(
    tiny_model, conll_dir, small_disk, monkeypatch, capsys
):
    """Checkpoints of the tiny model take 316 KiB: the second does not fit in 500 KiB."""
    disk = small_disk("500k")
    run = disk / "run"
    args = args_for(tiny_model, conll_dir, disk, "--num-train-epochs", "1", "--checkpoint-steps", "1")
    assert run_training(args) == 1
    checkpoints = run / "checkpoints"
    assert last_line(capsys.readouterr().err) == (
        f"error: cannot write checkpoint {checkpoints / 'step-0000002'} ({NO_SPACE}); its partial files were "
        f"removed; the last good checkpoint is {checkpoints / 'step-0000001'}: free space (or fix the disk), then "
        "resume with the same command plus --resume latest"
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-0000001"]
    step_one = sum(p.stat().st_size for p in (checkpoints / "step-0000001").iterdir())
    assert shutil.disk_usage(disk).used < step_one + 64 * 2**10  # the partial checkpoint's space came back

    subprocess.run(["mount", "-o", "remount,size=2m", str(disk)], check=True)
    filler = None
    real_save_final = save_final

    def full_before_the_final_save(*args, **kwargs):
        nonlocal filler
        filler = fill(disk)
        return real_save_final(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("ner_accel.train.save_final", full_before_the_final_save)
        assert run_training([*args, "--resume", "latest"]) == 1
    assert last_line(capsys.readouterr().err) == (
        f"error: cannot write the final model to {run / 'model'} ({NO_SPACE}); its partial files were removed; "
        f"the last good checkpoint is {checkpoints / 'step-0000003'}: free space (or fix the disk), then resume "
        "with the same command plus --resume latest"
    )
    assert leftovers(run) == [] and not (run / "model").exists() and not is_finished(run)
    filler.unlink()
    assert run_training([*args, "--resume", "latest"]) == 0
    assert is_finished(run) and leftovers(run) == [] and evaluated_steps(run) == [3]


@pytest.mark.parametrize("last_file", ["README.md", "report.html"])
def test_a_disk_that_fills_at_the_model_card_or_report_is_one_line(
    tiny_model, conll_dir, small_disk, monkeypatch, capsys, last_file
):
    """The model card and the HTML report are written at the final save, before metrics.json: a disk that fills
    as they are written ends the run in one line like any other failed write, nothing partial is left, the run does
    not look finished, and the resumed run then finishes."""
    import ner_accel.rundir.artifacts as artifacts
    from ner_accel.reporting.model_card import ModelCard

    disk = small_disk("2m")
    run = disk / "run"
    args = args_for(tiny_model, conll_dir, disk, "--num-train-epochs", "1")
    filler = None

    def fills_first(real):
        def write(path, *a, **k):
            nonlocal filler
            if Path(path).name in (last_file, f".{last_file}.tmp") and filler is None:
                filler = fill(disk)
            return real(path, *a, **k)

        return write

    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "write_text", fills_first(artifacts.write_text))
        if last_file == "README.md":
            real_save = ModelCard.save
            patch.setattr(ModelCard, "save", lambda card, path: fills_first(lambda p: real_save(card, p))(path))
        assert run_training(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and filler is not None
    if last_file == "README.md":
        first = f"error: cannot write the final model to {run / 'model'} ({NO_SPACE}); its partial files were removed"
    else:
        first = f"error: cannot write {run / last_file} ({NO_SPACE}); the partial file was removed"
    assert last_line(err).startswith(first + "; the last good checkpoint is ")
    assert leftovers(run) == [] and not is_finished(run)
    filler.unlink()
    assert run_training([*args, "--resume", "latest"]) == 0 and is_finished(run)
    assert (run / "model" / "README.md").is_file() and (run / "report.html").is_file()


def test_predict_output_and_the_tokenization_cache_on_a_full_disk(trained, tiny_model, small_disk, capsys):
    from ner_accel.predict import main as predict

    data, source = trained
    disk = small_disk("64k")
    fill(disk)
    output = disk / "entities.jsonl"
    assert predict(["--model", str(source), "--output", str(output), "Merkel fährt nach Paris ."]) == 1
    assert last_line(capsys.readouterr().err) == (
        f"error: cannot write --output {output} ({NO_SPACE}); the partial file was removed"
    )
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    corpus = load_corpus(CorpusOptions(data_dir=[str(data)]))
    with pytest.raises(
        WriteFailed, match=rf"^cannot write the tokenization cache {re.escape(str(disk))}.*\({NO_SPACE}\)$"
    ):
        encode_dataset(corpus.train, load_tokenizer(str(tiny_model)), corpus.labels, 64, False, "train", str(disk))


# ---------------------------------------------------------------------------------------------------------------
# Damaged checkpoints: checksums, and a resume from the newest that verifies


def damaged_copy(source: Path, destination: Path) -> Path:
    """A copy of the run as a kill before its end leaves it (no metrics.json: not finished)."""
    shutil.copytree(source, destination)
    (destination / "metrics.json").unlink()
    return destination


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated": ("model.safetensors", truncate, r"has \d+ bytes, \d+ were written"),
    "flipped byte": ("optimizer.bin", flip_a_byte, "fails its sha256 checksum"),
    "missing file": ("random_states_0.pkl", Path.unlink, "is missing"),
}


def test_resume_latest_skips_damaged_checkpoints_with_a_warning_naming_the_file(
    trained, tiny_model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps log lines at the terminal's width
    data, source = trained
    run = damaged_copy(source, tmp_path / "out" / "run")
    for step, (name, damage, _) in zip((6, 5, 4), DAMAGES.values()):
        damage(run / "checkpoints" / f"step-{step:07d}" / name)
    capsys.readouterr()
    args = args_for(tiny_model, data, tmp_path / "out", "--num-train-epochs", "2", "--checkpoint-steps", "1",
                    "--keep-checkpoints", "10", "--resume", "latest")  # fmt: skip
    assert run_training(args) == 0
    log = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    for step, (name, _, problem) in zip((6, 5, 4), DAMAGES.values()):
        path = run / "checkpoints" / f"step-{step:07d}" / name
        assert re.search(rf"--resume latest: skipping step-{step:07d}: {re.escape(str(path))} {problem}", log), step
    assert f"resumed from {run / 'checkpoints' / 'step-0000003'}" in log
    final = json.loads((source / "metrics.json").read_text())["final"]
    assert json.loads((run / "metrics.json").read_text())["final"] == final  # the run it continued
    assert all(verify(p) is None for p in (run / "checkpoints").glob("step-*")) and leftovers(run / "checkpoints") == []


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_an_explicit_resume_of_a_damaged_checkpoint_names_the_file_and_the_newest_good_one(
    damage, trained, tiny_model, tmp_path, capsys
):
    data, source = trained
    run = damaged_copy(source, tmp_path / "damaged")
    name, spoil, problem = DAMAGES[damage]
    checkpoint = run / "checkpoints" / "step-0000006"
    spoil(checkpoint / name)
    out = tmp_path / "out"
    assert run_training(args_for(tiny_model, data, out, "--num-train-epochs", "2", "--resume", checkpoint)) == 2
    good = run / "checkpoints" / "step-0000005"
    assert re.fullmatch(
        rf"error: --resume {re.escape(str(checkpoint))}: {re.escape(str(checkpoint / name))} {problem}; the newest "
        rf"good checkpoint is {re.escape(str(good))} \(pass --resume {re.escape(str(good))}\)",
        last_line(capsys.readouterr().err),
    )
    assert not out.exists()


def test_checkpoints_carry_sha256s_not_zip_crcs_and_leave_torch_save_as_it_was(trained):
    """The save turns torch.save's CRC32s off for its own files only; the sha256s vouch for them (DAMAGES)."""
    _, source = trained
    assert torch.serialization.get_crc32_options()  # the trained fixture ran 6 saves in this process
    checkpoint = source / "checkpoints" / "step-0000006"
    assert verify(checkpoint) is None
    with zipfile.ZipFile(checkpoint / "optimizer.bin") as archive:
        assert all(info.CRC == 0 for info in archive.infolist() if info.file_size)
    assert torch.load(checkpoint / "optimizer.bin", weights_only=False)["state"]


def test_a_checkpoint_written_before_checksums_that_does_not_load_is_skipped(trained, tmp_path, caplog):
    """The issue's case: model.safetensors cut short by a kill ('invalid header length'), in a checkpoint whose
    trainer state has no checksums; also a flipped byte in a torch zip archive (its CRC)."""
    _, source = trained
    run = damaged_copy(source, tmp_path / "run")
    for state_file in run.glob(f"checkpoints/step-*/{STATE_FILE}"):
        state = json.loads(state_file.read_text())
        del state["checksums"]
        state_file.write_text(json.dumps(state))
        for archive in [*state_file.parent.glob("*.bin"), *state_file.parent.glob("*.pkl")]:
            # torch.save's zip CRC32s, which checkpoints carried before the sha256s (now they carry the sha256s only)
            torch.save(torch.load(archive, weights_only=False), archive)
    weights = run / "checkpoints" / "step-0000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    flip_a_byte(run / "checkpoints" / "step-0000005" / "optimizer.bin")
    assert find_checkpoint("latest", run) == run / "checkpoints" / "step-0000004"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings[0] == (
        f"--resume latest: skipping step-0000006: {weights} does not load "
        "(SafetensorError: Error while deserializing header: invalid header length)"
    )
    assert warnings[1].startswith("--resume latest: skipping step-0000005: ") and "does not load" in warnings[1]


# ---------------------------------------------------------------------------------------------------------------
# Two runs in one directory; a kill while a checkpoint is replaced at its step

# The same step saved twice (--checkpoint-steps 3, then the final evaluation of step 6 that --eval-steps 4 missed):
# SIGKILL halfway through deleting the first save of step 6, whatever its name while it is deleted.
KILL_WHILE_REPLACING = """
import os, shutil, signal, sys
from pathlib import Path
real_rmtree = shutil.rmtree
def rmtree(path, *args, **kwargs):
    path = Path(path)
    if "step-0000006" in path.name and not path.name.endswith(".tmp") and (path / "model.safetensors").exists():
        (path / "model.safetensors").unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rmtree(path, *args, **kwargs)
shutil.rmtree = rmtree
from ner_accel.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def same_command_twice(tiny_model, tmp_path_factory) -> dict:
    """Run A (a real process) saves step 6 twice and is SIGKILLed inside the deletion of the first save. While A
    holds the run directory, the same command in this process (B) is refused; right after A's death the same
    command plus --resume latest (C) runs. Returns what each saw."""
    root = tmp_path_factory.mktemp("twice")
    data = root / "data"
    data.mkdir()
    (data / "train.conll").write_text(TRAIN, encoding="utf-8")
    (data / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    run = root / "out" / "run"
    args = args_for(tiny_model, data, root / "out", "--num-train-epochs", "2", "--eval-steps", "4",
                    "--checkpoint-steps", "3")  # fmt: skip
    seen: dict = {"run": run}
    with quiet_environment(root):
        first = start_script(KILL_WHILE_REPLACING, *args)
        seen["pid"] = first.pid
        deadline = time.monotonic() + 120
        while f"pid {first.pid}," not in lock_text(run):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.01)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            seen["second"] = run_training(args), last_line(stderr.getvalue())
        seen["lock_after_refusal"] = lock_text(run)
        first.communicate(timeout=240)
        seen["first_exit"] = first.returncode
        seen["stale_lock"] = lock_text(run)
        latest = Checkpoints(run, keep=1).latest()
        seen["latest_after_kill"] = latest.name if latest else None
        seen["latest_verifies"] = latest is not None and verify(latest) is None
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            seen["resumed"] = run_training([*args, "--resume", "latest"]), stderr.getvalue()
    return seen


def lock_text(run: Path) -> str:
    try:
        return (run / ".lock").read_text()
    except FileNotFoundError:
        return ""


def test_a_second_run_in_the_same_directory_is_refused_naming_the_holder(same_command_twice):
    seen = same_command_twice
    code, message = seen["second"]
    assert code == 2
    assert re.fullmatch(
        rf"error: {re.escape(str(seen['run']))} is in use by another ner_accel run \(host "
        rf"{re.escape(socket.gethostname())}, pid {seen['pid']}, started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\); wait "
        r"for it to finish or pass another --run-name/--output-dir",
        message,
    ), message
    assert f"pid {seen['pid']}," in seen["lock_after_refusal"]  # the refused run left the holder's lock file alone


def test_a_sigkilled_holder_frees_the_directory_at_once(same_command_twice):
    seen = same_command_twice
    assert seen["first_exit"] == -signal.SIGKILL
    assert f"pid {seen['pid']}," in seen["stale_lock"]  # the file outlives its holder; the kernel's lock does not
    code, log = seen["resumed"]
    assert code == 0, log[-3000:]


def test_a_kill_while_replacing_a_checkpoint_at_its_step_leaves_latest_complete(same_command_twice):
    seen = same_command_twice
    assert seen["latest_after_kill"] == "step-0000006" and seen["latest_verifies"]
    code, log = seen["resumed"]
    assert code == 0, log[-3000:]
    run = seen["run"]
    assert evaluated_steps(run) == [4, 6] and is_finished(run)
    assert leftovers(run / "checkpoints") == [] and leftovers(run) == []


# One two-process job (accelerate launch, gloo on CPU) runs the command twice, as two jobs would: first on a run
# directory that another run holds, then on a fresh one with rank 1's disk full when it writes its random state
# into the first checkpoint. Each process prints its outcome's code.
TWO_PROCESSES_TWO_FAULTS = """
import errno, os, sys, torch
from accelerate.state import AcceleratorState
from ner_accel.train import main
held, fresh = sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]
codes = [main(held)]
AcceleratorState._reset_state(reset_partial_state=True)
real_save = torch.save
def save(obj, f, *args, **kwargs):
    if str(f).endswith("random_states_1.pkl"):
        with open(f, "wb") as stream:
            stream.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real_save(obj, f, *args, **kwargs)
torch.save = save
codes.append(main(fresh))
# one write(2) of the whole line: the two processes share the pipe, and print's separate writes of "exit codes", the
# list and the newline interleaved between them (seen in CI: "exit codesexit codes [2, 1]")
os.write(2, f"exit codes {codes}\\n".encode())
"""


def test_under_accelerate_launch_the_processes_refuse_and_fail_together(tiny_model, conll_dir, tmp_path):
    """Only rank 0 takes the lock; the others learn its answer and refuse with it, instead of waiting for it at
    the next collective. A write that fails on one process is agreed on before the rename, so none waits
    forever for it, and each says the same line. (That rank 1 never takes the lock is also what lets the
    two-process runs of test_distributed.py train at all.)"""
    held, fresh = tmp_path / "held", tmp_path / "fresh"
    acquire(held / "run")  # this test stands for the other run
    script = tmp_path / "two_faults.py"
    script.write_text(TWO_PROCESSES_TWO_FAULTS)
    first = args_for(tiny_model, conll_dir, held)
    second = args_for(tiny_model, conll_dir, fresh, "--num-train-epochs", "1", "--checkpoint-steps", "1")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch" / "cpu.yaml")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    try:
        command = [*launch, str(script), *map(str, first), "--", *map(str, second)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    finally:
        release_run_locks()
    log = done.stderr  # the two processes' lines, one progress bar's \r-line possibly before another's
    assert done.returncode == 0 and log.count("exit codes [2, 1]\n") == 2, log[-3000:]
    refusal = re.compile(
        rf"error: {re.escape(str(held / 'run'))} is in use by another ner_accel run \(host \S+, pid {os.getpid()}, "
        r"started [\d:\- ]+\); wait for it to finish or pass another --run-name/--output-dir\n"
    )
    assert len(refusal.findall(log)) == 2
    checkpoints = fresh / "run" / "checkpoints"
    failed = (
        f"error: cannot write checkpoint {checkpoints / 'step-0000001'} ({NO_SPACE}); its partial files were "
        "removed; no checkpoint was saved yet: free space (or fix the disk), then run the same command again"
    )
    assert log.count(failed + "\n") == 2 and list(checkpoints.iterdir()) == []


def test_a_stop_signal_right_after_a_checkpoint_does_not_write_that_step_again(
    tiny_model, conll_dir, tmp_path, monkeypatch
):
    original, staged = Accelerator.save_state, []

    def save_state_then_sigterm(self, output_dir=None, **kwargs):
        staged.append(Path(output_dir).name)
        saved = original(self, output_dir, **kwargs)
        if len(staged) == 1:  # Slurm's notice arrives while step 2 is being checkpointed
            os.kill(os.getpid(), signal.SIGTERM)
        return saved

    monkeypatch.setattr(Accelerator, "save_state", save_state_then_sigterm)
    args = args_for(tiny_model, conll_dir, tmp_path, "--num-train-epochs", "2", "--checkpoint-steps", "2")
    assert run_training(args) == 128 + signal.SIGTERM
    assert staged == [".step-0000002.tmp"]


class Killed(BaseException):
    """Stands for SIGKILL inside a deletion: no `except Exception` catches it, no cleanup runs after it."""


def test_a_kill_while_rotating_leaves_no_half_deleted_checkpoint(prepared, tmp_path, monkeypatch):
    run = tmp_path / "run"
    checkpoints = Checkpoints(run, keep=1)
    checkpoints.save(prepared, TrainerState(step=1))

    def killed_midway(path, *args, **kwargs):
        (Path(path) / "optimizer.bin").unlink()
        raise Killed

    with monkeypatch.context() as patch, pytest.raises(Killed):
        patch.setattr(shutil, "rmtree", killed_midway)
        checkpoints.save(prepared, TrainerState(step=2))
    assert all(verify(p) is None for p in checkpoints.root.glob("step-*"))
    assert find_checkpoint("latest", run) == checkpoints.path(2)
    assert sorted(p.name for p in checkpoints.root.iterdir()) == ["latest", "step-0000002"]


# ---------------------------------------------------------------------------------------------------------------
# A kill during the final save


KILL_IN_FINAL_SAVE = """
import os, signal, sys
import transformers.modeling_utils
def save_file(tensors, filename, *args, **kwargs):
    with open(filename, "wb") as stream:  # the final weights half written, then SIGKILL
        stream.write(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
transformers.modeling_utils.safe_save_file = save_file
from ner_accel.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_the_final_save_never_leaves_a_finished_looking_directory(trained, tiny_model, tmp_path, capsys):
    """Over an earlier finished run (--overwrite), whose metrics.json must not vouch for the new model."""
    data, source = trained
    run = tmp_path / "out" / "run"
    shutil.copytree(source, run)
    args = args_for(tiny_model, data, tmp_path / "out", "--num-train-epochs", "2")
    killed = start_script(KILL_IN_FINAL_SAVE, *args, "--overwrite")
    _, stderr = killed.communicate(timeout=240)
    assert killed.returncode == -signal.SIGKILL, stderr[-3000:]
    assert list(run.glob(".model.tmp-*")) and not is_finished(run)
    assert run_training(args) == 2
    assert last_line(capsys.readouterr().err) == (
        f"error: {run}: holds checkpoints of an unfinished run (its final save was interrupted); pass --resume "
        "latest to continue it from step-0000006, or --overwrite to start again"
    )
    assert run_training([*args, "--resume", "latest"]) == 0
    assert is_finished(run) and leftovers(run) == [] and evaluated_steps(run) == [3, 6]


# ---------------------------------------------------------------------------------------------------------------
# The tokenization cache


def encoded(data: Path, model: Path, cache: Path) -> dict:
    """The tokenized training split as a new run gets it: data and tokenizer loaded afresh."""
    corpus = load_corpus(CorpusOptions(data_dir=[str(data)]))
    return encode_dataset(corpus.train, load_tokenizer(str(model)), corpus.labels, 64, False, "train", str(cache))[:]


def test_a_changed_data_file_gets_a_new_tokenization_cache(tiny_model, conll_dir, tmp_path):
    before = encoded(conll_dir, tiny_model, tmp_path)
    assert encoded(conll_dir, tiny_model, tmp_path) == before  # the cache serves an unchanged file
    (conll_dir / "train.conll").write_text(TRAIN.replace("Leipzig\tB-LOC", "Leipzig\tB-ORG"), encoding="utf-8")
    after = encoded(conll_dir, tiny_model, tmp_path)
    assert after["labels"] != before["labels"]
    assert len(list((tmp_path / "ner_accel").glob("encoded-*.arrow"))) == 2


KEY_IN_ANOTHER_PROCESS = """import sys
from ner_accel.data.encoding import tokenizer_fingerprint
from ner_accel.modeling.loading import load_tokenizer
print(tokenizer_fingerprint(load_tokenizer(sys.argv[1])))"""


@pytest.mark.parametrize("kind", ["wordpiece", "xlm-r"])
def test_the_tokenization_cache_key_is_the_vocabulary_not_the_call_settings(kind, tiny_model):
    model = tiny_model if kind == "wordpiece" else XLMR_SHAPE
    if not model.exists():
        pytest.skip(f"{model} not found: ../shared (XLM-R's tokenizer) ships beside the checkout in CI")
    tokenizer = load_tokenizer(str(model))
    key = tokenizer_fingerprint(tokenizer)
    # Another process, with another hash seed, serialises the same tokenizer to the same key: the cache is shared.
    other = subprocess.run([sys.executable, "-c", KEY_IN_ANOTHER_PROCESS, str(model)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "7"})  # fmt: skip
    assert other.stdout.strip() == key
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(5)
    backend.enable_padding(length=9, pad_token=tokenizer.pad_token)
    settings = backend.truncation, backend.padding
    assert tokenizer_fingerprint(tokenizer) == key  # what a call sets is not the tokenizer's identity ...
    assert (backend.truncation, backend.padding) == settings  # ... and is left as it was
    tokenizer.add_tokens(["Leipzigerin"])
    assert tokenizer_fingerprint(tokenizer) != key


def test_a_truncated_tokenization_cache_is_rebuilt_with_one_warning(tiny_model, conll_dir, tmp_path, caplog):
    first = encoded(conll_dir, tiny_model, tmp_path)
    (cache_file,) = (tmp_path / "ner_accel").glob("encoded-*.arrow")
    truncate(cache_file)
    rebuilt = encoded(conll_dir, tiny_model, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "tokenization cache" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"train: tokenization cache {cache_file} is damaged (")
    assert warnings[0].endswith("); rebuilding it")
    assert rebuilt == first
    assert encoded(conll_dir, tiny_model, tmp_path) == first  # the rebuilt file serves the next run
    assert len(list((tmp_path / "ner_accel").glob("encoded-*.arrow"))) == 1
