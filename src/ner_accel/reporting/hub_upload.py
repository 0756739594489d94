"""Uploading a trained model to the Hub (--push-to-hub): checked before training, one line on failure."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..errors import UsageError
from ..hub import hub_reachable

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
