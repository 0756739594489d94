"""Model directories the benchmarks and tests make from ../shared: multilingual-e5-small (4-bit in ../shared) as
a transformers model directory, converted once per machine; an architecture with random weights (random_weights).

    python benchmarks/shared_models.py        # converts if needed, prints the directory
    python -m benchmarks.shared_models        # the same, from the checkout's root

../shared is read-only (in CI too), so the conversion goes to a cache outside the checkout:
$NER_ACCEL_MODEL_CACHE/multilingual-e5-small/multilingual-e5-small-<source key>/, by default under
~/.cache/ner_accel/models. The key hashes the source files (the converter, the 4-bit weights, XLM-R's tokenizer), so
a changed source converts anew. Tests (the multilingual_model fixture) and benchmarks (bench_train.py --workload
e5-de, step_profile.py, multilingual.py) call multilingual_e5_small(); two processes asking at once convert once:
the second waits on a file lock, and the converter writes into a temporary directory that is renamed into place
only once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
E5_SOURCE = SHARED / "models" / "multilingual-e5-small-q4"
XLMR_TOKENIZER = SHARED / "models" / "xlm-roberta-base-shape"
CACHE_VARIABLE = "NER_ACCEL_MODEL_CACHE"
E5_NAME = "multilingual-e5-small"
# What to_transformers.py reads: a change to any of them must give a new conversion.
E5_INPUTS = (
    E5_SOURCE / "to_transformers.py",
    E5_SOURCE / "e5-small-q4.bin",
    XLMR_TOKENIZER / "tokenizer.json",
    XLMR_TOKENIZER / "tokenizer_config.json",
)
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
PANX_LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def missing_sources() -> list[Path]:
    """The source files of the conversion that are not there (all of them where ../shared is absent)."""
    return [path for path in E5_INPUTS if not path.is_file()]


def cache_root() -> Path:
    """Where converted models live: $NER_ACCEL_MODEL_CACHE, else ~/.cache/ner_accel/models (outside the checkout)."""
    return Path(os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "ner_accel" / "models").expanduser()


def source_key() -> str:
    """A hash of the source files' names and contents (90 MB: about 0.2 s), so even a same-size edit converts anew."""
    digest = hashlib.sha256()
    for path in E5_INPUTS:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[bool]:
    """An advisory lock across processes (flock, released by the kernel if the holder dies); yields whether held."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename alone still keeps partial conversions out
        yield False
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def multilingual_e5_small() -> Path:
    """The converted model's directory (config.json, model.safetensors, XLM-R's tokenizer); converts on first use."""
    missing = missing_sources()
    if missing:
        raise FileNotFoundError(
            f"{', '.join(map(str, missing))} not found: multilingual-e5-small is converted from ../shared "
            f"(read-only material beside the checkout, expected at {SHARED}); it ships beside the checkout in CI"
        )
    home = cache_root() / E5_NAME
    target = home / f"{E5_NAME}-{source_key()}"  # the model's name last: run names and reports show it
    if target.is_dir():  # only a complete conversion is ever renamed to this name
        return target
    home.mkdir(parents=True, exist_ok=True)
    with exclusive(home / ".lock") as locked:
        if target.is_dir():  # another process converted it while this one waited
            return target
        if locked:  # left by a killed conversion: under the lock, nobody is writing them
            for stale in home.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=home))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a cache shared between users
        try:
            convert(staging)
            os.rename(staging, target)  # atomic; fails if another (unlocked) process renamed its copy first
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.is_dir():
                raise
        for old in home.iterdir():  # conversions of earlier sources: 470 MB each
            if old.is_dir() and old != target and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return target


def convert(out: Path) -> None:
    """Run the shared converter into `out` (its own process: it exits on bad input and holds 1 GB while it runs)."""
    done = subprocess.run(
        [sys.executable, str(E5_SOURCE / "to_transformers.py"), str(out)], capture_output=True, text=True
    )
    lost = [name for name in MODEL_FILES if not (out / name).is_file()]
    if done.returncode != 0 or lost:
        raise RuntimeError(
            f"converting {E5_SOURCE} failed (exit {done.returncode}, missing {lost or 'nothing'}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )


def random_weights(source: str, path: Path, seed: int = 42, device: str = "cpu") -> Path:
    """`source`'s architecture with seeded random weights and PAN-X's labels, saved at `path` with its tokenizer
    (the xlm-roberta-base shape in ../shared holds a config and a tokenizer, no weights); kept if saved before."""
    if (path / "model.safetensors").is_file():
        return path
    import torch
    from transformers import AutoTokenizer

    from ner_accel.modeling.loading import load_model

    torch.manual_seed(seed)
    with torch.device(device):  # random initialisation on a GPU takes milliseconds, on the host seconds
        model = load_model(source, PANX_LABELS, from_config=True)
    model.cpu().save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


if __name__ == "__main__":
    try:
        print(multilingual_e5_small())
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")
