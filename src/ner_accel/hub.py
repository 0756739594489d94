"""The Hugging Face Hub: XTREME PAN-X, pretrained encoders, uploading a trained model; fast failures offline."""

from __future__ import annotations

import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

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


# ---------------------------------------------------------------------------------------------------------------
# Uploading a trained model (--push-to-hub)


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UsageError(
            f"--push-to-hub {repo_id!r}: not a Hub repository id ({error}); pass name or owner/name, "
            "e.g. my-user/xlmr-panx-de"
        ) from None


def no_token(repo_id: str) -> UsageError:
    return UsageError(
        f"--push-to-hub {repo_id}: no Hugging Face token; run `hf auth login` with a write token or set HF_TOKEN"
    )


def check_push_target(repo_id: str, token: str | None = None) -> None:
    """Before any work: a well-formed repo id and a token to write with, so hours of training do not end refused."""
    check_repo_id(repo_id)
    if not (token or get_token()):
        raise no_token(repo_id)


def hub_reachable_now() -> bool:
    """hub_reachable without its cache: the run may have started offline hours before the upload."""
    return hub_reachable.__wrapped__()


def push_to_hub(model_dir: Path, repo_id: str, token: str | None = None) -> str:
    """Upload the model directory to the Hub repository (created if missing); return the repository's URL.

    Every failure is a one-line UsageError that says where the model is and how to upload it later."""
    check_repo_id(repo_id)
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"{model_dir}: no saved model (config.json) to push to {repo_id}")
    kept = f"the model is saved in {model_dir}; upload it later with `hf upload {repo_id} {model_dir}`"
    if not hub_reachable_now():
        raise UsageError(f"cannot reach the Hugging Face Hub to push {repo_id}; {kept} or rerun with network")
    token = token or get_token()
    if not token:
        raise UsageError(f"{no_token(repo_id)}; {kept}")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=model_dir,
            commit_message="Upload model fine-tuned with ner_accel",
            ignore_patterns=[".*"],  # temporaries of an atomic write
        )
    except HfHubHTTPError as error:
        status = error.response.status_code
        reason = {
            401: "the Hub rejected the token (401); run `hf auth login` with a valid write token",
            403: f"the token may not write to {repo_id} (403); use a write token of that user or organisation",
        }.get(status, f"the Hub answered {status}: {str(error).splitlines()[0]}")
        raise UsageError(f"cannot push to {repo_id}: {reason}; {kept}") from None
    except Exception as error:  # transport errors are httpx's in huggingface_hub 1.x, httpx2's in 2.x
        raise UsageError(f"cannot push to {repo_id} ({type(error).__name__}: {error}); {kept}") from None
    return str(url)
