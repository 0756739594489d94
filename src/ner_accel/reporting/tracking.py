"""Experiment tracking through Accelerate's trackers: which ones to start, and the flat scalars a run logs to them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from accelerate import Accelerator

from ..errors import UsageError
from ..training.precision import end_accelerator

# --report-to names (as TrainingArguments spells them) and the package each tracker needs.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "clearml": "clearml",
}
REPORT_TO_CHOICES = (*TRACKER_PACKAGES, "all", "none")


def installed(tracker: str) -> bool:
    return importlib.util.find_spec(TRACKER_PACKAGES[tracker]) is not None


def resolve_trackers(report_to: list[str]) -> list[str]:
    """The trackers to start: 'none' for none, 'all' for every installed one; one asked for by name must be installed."""
    unknown = [name for name in report_to if name not in REPORT_TO_CHOICES]
    if unknown:
        raise UsageError(f"--report-to {unknown[0]}: unknown tracker; use any of {', '.join(REPORT_TO_CHOICES)}")
    if "none" in report_to:
        return []
    if "all" in report_to:
        return [name for name in TRACKER_PACKAGES if installed(name)]
    for name in report_to:
        if not installed(name):
            package = TRACKER_PACKAGES[name]
            raise UsageError(f"--report-to {name}: the {package} package is not installed; pip install {package}")
    return list(dict.fromkeys(report_to))


def start_tracking(accelerator: Accelerator, run_name: str, config: dict, step: int) -> None:
    """Open the trackers with the run's resolved configuration; a resumed run continues its curves after `step`.

    TensorBoard readers drop the points an earlier, interrupted process logged after the checkpoint it resumes from
    (purge_step), so no step appears twice.
    """
    hyperparameters = {key: value if isinstance(value, int | float | str | bool) else str(value)
                       for key, value in config.items()}  # fmt: skip
    accelerator.init_trackers(run_name, hyperparameters, init_kwargs={"tensorboard": {"purge_step": step + 1}})


@contextmanager
def closed_at_exit(accelerator: Accelerator) -> Iterator[None]:
    """Flush and close the trackers (and the process group) however the run ends: a stopped run keeps every point
    it logged."""
    try:
        yield
    finally:
        end_accelerator(accelerator)


def evaluation_scalars(results: dict[str, dict]) -> dict[str, float]:
    """An evaluation as flat scalars: eval/<set>/f1 (precision, recall), eval/<set>/<TYPE>/f1, eval/mean_f1."""
    scalars = {}
    for name, metrics in results.items():
        if name == "mean_f1":
            scalars["eval/mean_f1"] = metrics
            continue
        for key in ("precision", "recall", "f1"):
            scalars[f"eval/{name}/{key}"] = metrics[key]
        for kind, values in metrics["per_type"].items():
            scalars[f"eval/{name}/{kind}/f1"] = values["f1"]
    return scalars
