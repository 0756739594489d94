"""PAN-X from the Hub's XTREME (or a local copy in the Hub layout), with the fast failure offline."""

from __future__ import annotations

from ..errors import UsageError
from ..hub import hub_reachable, is_local


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
