"""The Hugging Face Hub paths (XTREME PAN-X, pretrained encoders), failing within seconds when it is out of reach."""

from __future__ import annotations

import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants

from .errors import UsageError


@cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect instead of the libraries' minute of retries; honours HF_HUB_OFFLINE."""
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def is_local(name: str) -> bool:
    return Path(name).exists()


def load_hub_panx(dataset: str, language: str) -> tuple[dict[str, list[dict]], list[str]]:
    """PAN-X.<language> from XTREME (Hub id or a local copy in the Hub layout) as word-level sentences."""
    from datasets import load_dataset

    if not is_local(dataset) and not hub_reachable():
        raise UsageError(
            f"cannot reach the Hugging Face Hub for dataset '{dataset}' (PAN-X.{language}); pass --data-dir <dir> "
            "with train/validation .conll files (e.g. ../shared/data/panx/de) or a local copy via --dataset <dir>"
        )
    try:
        splits = load_dataset(dataset, data_dir=f"PAN-X.{language}")
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise UsageError(
            f"--dataset {dataset}: no PAN-X.{language} data found ({type(error).__name__}); check --languages, "
            "or pass --data-dir <dir> with train/validation .conll files"
        ) from error
    names = splits["train"].features["ner_tags"].feature.names
    converted = {
        split: [{"tokens": row["tokens"], "tags": [names[t] for t in row["ner_tags"]]} for row in data]
        for split, data in splits.items()
    }
    return converted, list(names)


def pretrained_kwargs(name: str, trust_remote_code: bool) -> dict:
    """Arguments for from_pretrained: never run repository code unless asked; stay local when offline."""
    if Path(name).is_file():  # e.g. .../model/config.json: the directory is what loads
        raise UsageError(f"--model {name}: is a file; pass the model directory that holds it ({Path(name).parent})")
    if not is_local(name):
        if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a Hub id (owner/name)
            raise UsageError(f"--model {name}: directory not found; pass an existing model directory or a Hub id")
        if not hub_reachable():
            return {"trust_remote_code": trust_remote_code, "local_files_only": True}
    return {"trust_remote_code": trust_remote_code}


def load_error(name: str, what: str, error: OSError) -> UsageError:
    """The one-line message for a model directory or Hub id whose `what` (tokenizer, config) cannot be loaded."""
    if "local_files_only" in pretrained_kwargs(name, False):
        return UsageError(
            f"--model {name}: not a local directory and the Hugging Face Hub is unreachable (nor is it cached); "
            "pass --model <local model directory> (e.g. ../shared/models/minilm-l6-h384-uncased)"
        )
    return UsageError(f"--model {name}: cannot load its {what} ({error}); pass a model directory with one")
