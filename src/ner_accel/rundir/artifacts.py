"""The run directory's finished results: the final save, what counts as finished, what a new run may reuse."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import ModelCard

from ..errors import UsageError
from ..reporting.console import report_text
from .checkpoint import Checkpoints, has_checkpoints
from .files import atomic_write, write_json, write_text
from .integrity import verify

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.json"
REPORT_FILE = "report.txt"
RUN_REPORT = "report.html"  # the page a training run writes into its run directory
# What a kill leaves in the run directory: the model's staging or retired copy, a temporary file, checkpoints
# that --overwrite was deleting.
LEFTOVERS = (".*.tmp-*", f".{MODEL_DIR}.old-*", ".*.tmp", ".*.deleting")


def is_finished(run_dir: Path) -> bool:
    """model/ (config, weights, tokenizer), the resolved config and metrics.json, which save_final writes last: a
    final save that was interrupted never looks finished."""
    model = run_dir / MODEL_DIR
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    return (
        all((model / name).is_file() for name in ("config.json", "tokenizer_config.json"))
        and any((model / name).is_file() for name in weights)
        and all((run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE))
    )


def check_run_dir(run_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Refuse to mix a new run into a directory that holds another run's finished results or checkpoints, naming
    the command that works next: --resume latest only where a checkpoint verifies (find_checkpoint would refuse
    it otherwise)."""
    if is_finished(run_dir) and not overwrite:
        if resuming:
            raise UsageError(
                f"{run_dir}: already holds a finished run, so there is nothing to resume; train it again with the "
                "same command without --resume, plus --overwrite (or pass another --run-name)"
            )
        raise UsageError(
            f"{run_dir}: already holds a finished run; pass --overwrite to replace it or --run-name for a new one"
        )
    # Complete checkpoints only: what a killed or failed save left (.step-*.tmp) is no run to continue.
    if not resuming and not overwrite and has_checkpoints(run_dir):
        interrupted = (run_dir / MODEL_DIR).exists() or any(run_dir.glob(f".{MODEL_DIR}.*"))
        unfinished = f"{run_dir}: holds checkpoints of an unfinished run" + (
            " (its final save was interrupted)" if interrupted else ""
        )
        checkpoints = Checkpoints(run_dir, keep=1)
        good = checkpoints.newest_good()
        if good is not None:
            raise UsageError(f"{unfinished}; pass --resume latest to continue it from {good.name}, or --overwrite "
                             "to start again")  # fmt: skip
        newest = checkpoints.newest_first()[0]
        raise UsageError(
            f"{unfinished}, and none of them verifies (the newest, {newest.name}: {verify(newest)}); pass --overwrite "
            "to start again"
        )


def remove_leftovers(run_dir: Path) -> None:
    """Remove what a final save killed midway left behind, so its disk space comes back."""
    for pattern in LEFTOVERS:
        for path in run_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def save_final(
    run_dir: Path,
    model,
    tokenizer,
    history: list[dict],
    results: dict[str, dict],
    state_dict: dict | None = None,
    seconds: dict[str, float] | None = None,
    card: Callable[[Path], ModelCard] | None = None,
    html: str | None = None,
) -> None:
    """The model in plain transformers form with its tokenizer and card, every evaluation, the final per-entity
    report and the HTML page.

    metrics.json goes first and comes back last, so that the directory counts as finished (is_finished) only
    once everything is complete, and an earlier run's metrics never vouch for a model that is half replaced.
    state_dict: the weights to save (the full ones when the model's own are sharded, with the full embedding matrix);
    seconds: the run's wall time per phase, kept in metrics.json; card: the model card of the model's files in the
    directory given (README.md, written with them); html: the run's report.html."""
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    remove_leftovers(run_dir)
    target = run_dir / MODEL_DIR
    with atomic_write(target, f"the final model to {target}", directory=True) as staging:
        model.save_pretrained(staging, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(staging)
        if card is not None:
            card(staging).save(staging / "README.md")
    write_text(run_dir / REPORT_FILE, report_text(results))
    if html is not None:
        write_text(run_dir / RUN_REPORT, html)
    write_json(run_dir / METRICS_FILE, {"evaluations": history, "final": results, "seconds": seconds or {}})
