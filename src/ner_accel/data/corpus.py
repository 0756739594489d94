"""The corpus of a training run: every source read, the label set from the training data, evaluation tags checked."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from ..errors import UsageError
from .panx_hub import load_hub_panx
from .readers import ReadOptions, find_split_file, load_local_dir

logger = logging.getLogger(__name__)


@dataclass
class Corpus:
    """Word-level splits: training data concatenated over sources, evaluation data kept per source."""

    labels: list[str]
    train: Dataset
    validation: dict[str, Dataset]


# ---------------------------------------------------------------------------------------------------------------
# Labels


def labels_from_tags(tag_lists) -> list[str]:
    """O first, then B- and I- of each entity type in sorted order; both are kept whenever either is seen."""
    types = sorted({tag[2:] for tags in tag_lists for tag in tags if tag != "O"})
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def count_bad_starts(tag_lists) -> int:
    """I-X tags that follow O or a different type: seqeval reads them as entity starts."""
    bad = 0
    for tags in tag_lists:
        previous = "O"
        for tag in tags:
            if tag.startswith("I-") and previous[2:] != tag[2:]:
                bad += 1
            previous = tag
    return bad


def check_known_tags(
    sentences: list[dict], labels: list[str], where: str, known_as: str = "the training data as read"
) -> None:
    """Every evaluation tag must be one the model can predict."""
    known = set(labels)
    for number, sentence in enumerate(sentences, start=1):
        for tag in sentence["tags"]:
            if tag not in known:
                place = f"{where}:{sentence['line']}" if "line" in sentence else f"{where}: sentence {number}"
                hint = " (mind --max-train-samples)" if known_as.startswith("the training") else ""
                raise UsageError(
                    f"{place}: tag {tag!r} is not in {known_as} ({', '.join(labels)}); "
                    f"fix the tag, or use a model trained on data that has it{hint}"
                )


# ---------------------------------------------------------------------------------------------------------------
# Corpus assembly


def subsample(sentences: list[dict], limit: int | None, fraction: float | None, seed: int) -> list[dict]:
    """Apply a language fraction (a seeded sample, as the book samples PAN-X) and then a --max-*-samples cut."""
    if fraction is not None and fraction < 1.0:
        sample = Dataset.from_list(sentences).shuffle(seed=seed).select(range(max(1, int(fraction * len(sentences)))))
        sentences = sample.to_list()
    return sentences[:limit] if limit is not None else sentences


def source_names(data_dirs: list[str]) -> dict[str, Path]:
    """Each directory under its folder name (the language, as in ../shared/data/panx/de), which keys results."""
    names: dict[str, Path] = {}
    for directory in data_dirs:
        path = Path(directory)
        name = Path(os.path.abspath(directory)).name  # "." and ".." resolved, symlinks kept as given
        if name in names:
            raise UsageError(
                f"--data-dir {names[name]} and {directory}: both are named '{name}', which keys their results; "
                "pass each directory once, under distinct folder names"
            )
        names[name] = path
    return names


@dataclass(frozen=True)
class CorpusOptions(ReadOptions):
    """Where a training run's corpus comes from and how much of it is used (TrainConfig.corpus_options()); how its
    local files are read: the ReadOptions fields (the Hub's PAN-X is IOB2 words already)."""

    data_dir: list[str] | None = None  # local directories; None: PAN-X from `dataset`
    dataset: str = "google/xtreme"
    languages: list[str] = field(default_factory=lambda: ["de"])
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    language_fractions: list[float] | None = None  # one per source: a seeded sample of its training set
    seed: int = 42


def load_corpus(options: CorpusOptions) -> Corpus:
    """Read every source, derive the label set from training data, and check evaluation tags against it."""
    data_dirs, languages, seed = options.data_dir, options.languages, options.seed
    max_train_samples, max_eval_samples, fractions = (
        options.max_train_samples, options.max_eval_samples, options.language_fractions
    )  # fmt: skip
    origins = {}  # source name -> where its files are, for messages
    if data_dirs:
        origins = source_names(data_dirs)
        read = ReadOptions.of(options)
        sources = {name: load_local_dir(directory, read) for name, directory in origins.items()}
        hub_labels = None
    else:
        sources, hub_labels = {}, None
        for language in languages:
            sources[language], hub_labels = load_hub_panx(options.dataset, language)
    fractions = fractions or [None] * len(sources)

    train_parts = {
        name: subsample(splits["train"], max_train_samples, fraction, seed)
        for (name, splits), fraction in zip(sources.items(), fractions)
    }
    labels = hub_labels or labels_from_tags(s["tags"] for part in train_parts.values() for s in part)
    if labels == ["O"]:
        files = ", ".join(str(find_split_file(origin, "train")) for origin in origins.values())
        raise UsageError(
            f"{files}: the training sentences (after --max-train-samples) hold no entity, only O tags; "
            "train on data with B-/I- tags"
        )
    corpus = Corpus(labels=labels, train=None, validation={})
    for name, splits in sources.items():
        sentences = subsample(splits["validation"], max_eval_samples, None, seed)
        origin = find_split_file(origins[name], "validation") if name in origins else f"PAN-X.{name}/validation"
        check_known_tags(sentences, labels, str(origin))
        corpus.validation[name] = to_dataset(sentences, name)
    bad = count_bad_starts(s["tags"] for part in train_parts.values() for s in part)
    if bad:
        logger.warning("training data: %d I- tags follow O or another type; read as entity starts (as seqeval)", bad)
    corpus.train = concatenate_datasets([to_dataset(part, name) for name, part in train_parts.items()])
    return corpus


def to_dataset(sentences: list[dict], language: str) -> Dataset:
    return Dataset.from_dict(
        {
            "tokens": [s["tokens"] for s in sentences],
            "tags": [s["tags"] for s in sentences],
            "language": [language] * len(sentences),
        }
    )
