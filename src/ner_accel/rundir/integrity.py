"""Whether a checkpoint is whole: the sha256 and size of each file, written last beside the state, checked on resume;
the sha256 of a tensor, for the frozen parameters a checkpoint leaves out."""

from __future__ import annotations

import hashlib
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import safe_open

STATE_FILE = "trainer_state.json"
CHECKSUMS = "checksums"  # in STATE_FILE: the sha256 and size of every other file of the checkpoint
TENSOR_CHUNK = 64 * 2**20  # bytes of a tensor hashed by one thread


def file_digest(path: Path, block: int = 2**20) -> str:
    """sha256 of a file, read in blocks (a checkpoint's optimizer state is gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes: of the sha256s of its 64 MiB chunks, taken side by side (the
    multilingual models' word embeddings are 384 to 768 MB)."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    chunks = [memoryview(data[start : start + TENSOR_CHUNK]) for start in range(0, len(data), TENSOR_CHUNK)]
    with ThreadPoolExecutor() as pool:
        digests = list(pool.map(lambda chunk: hashlib.sha256(chunk).digest(), chunks))
    return hashlib.sha256(f"{tensor.dtype} {tuple(tensor.shape)}".encode() + b"".join(digests)).hexdigest()


def file_checksums(directory: Path) -> dict[str, dict]:
    """The sha256 and size of every file under `directory` but the trainer state."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != STATE_FILE)
    with ThreadPoolExecutor() as pool:  # hashlib lets go of the GIL: the weights and the moments hash side by side
        digests = list(pool.map(file_digest, files))
    return {
        p.relative_to(directory).as_posix(): {"sha256": d, "bytes": p.stat().st_size} for p, d in zip(files, digests)
    }


def verify(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint, naming the file (None when it is sound): a missing or unreadable trainer
    state, a missing file, a size or sha256 that differs from what was written; for a checkpoint written before
    checksums, a file that does not load."""
    state_file = checkpoint / STATE_FILE
    try:
        record = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{state_file} is missing"
    except (OSError, ValueError) as error:
        return f"{state_file} is unreadable ({error})"
    checksums = record.get(CHECKSUMS) if isinstance(record, dict) else None
    if checksums is None:
        return load_problem(checkpoint)
    for name, written in checksums.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != written["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, {written['bytes']} were written"
        try:
            digest = file_digest(path)
        except OSError as error:  # a failing disk: EIO
            return f"{path} is unreadable ({error.strerror or error})"
        if digest != written["sha256"]:
            return f"{path} fails its sha256 checksum"
    return None


def load_problem(checkpoint: Path) -> str | None:
    """For a checkpoint without checksums: model weights present, safetensors headers whole, torch's zip
    archives intact (their CRCs)."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != STATE_FILE)
    if not any(p.name.startswith(("model", "pytorch_model")) for p in files):
        return f"{checkpoint} has no model weights (model.safetensors)"
    for path in files:
        try:
            if path.suffix == ".safetensors":
                with safe_open(path, "pt"):
                    pass
            elif path.suffix in (".bin", ".pkl"):
                with zipfile.ZipFile(path) as archive:
                    broken = archive.testzip()
                if broken is not None:
                    return f"{path} does not load (its {broken} fails its CRC)"
        except Exception as error:  # whatever safetensors or zipfile raise for a damaged file
            return f"{path} does not load ({type(error).__name__}: {error})"
    return None
