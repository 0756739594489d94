"""Load NER corpora (Hub PAN-X or local CoNLL / JSON Lines) into word-level datasets with string tags."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from .errors import UsageError
from .hub import load_hub_panx
from .lines import numbered_lines
from .tag_schemes import DISPLAY_NAMES, PREFIXES, is_tag, read_as_iob2, scheme_name
from .tag_schemes import TAG_SCHEMES as TAG_SCHEMES  # re-exported: the choices of --tag-scheme, beside the readers

logger = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "validation")  # a test split is only ever read by ner_accel.evaluate --split test
# The file names each split goes by: CoNLL-2003 ships train.txt, valid.txt and test.txt; other corpora say dev.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".iob2")
JSONL_SUFFIXES = (".jsonl",)


@dataclass
class Corpus:
    """Word-level splits: training data concatenated over sources, evaluation data kept per source."""

    labels: list[str]
    train: Dataset
    validation: dict[str, Dataset]


# ---------------------------------------------------------------------------------------------------------------
# Readers: one sentence = {"tokens": [...], "tags": [...]} with IOB2 tags, whatever the file's scheme (tag_scheme:
# one of TAG_SCHEMES, "auto" detects it per file); errors name the file, the line and the fix.


def check_tag(tag: str, where: str, tag_scheme: str = "iob2") -> None:
    """Accept the tags of the scheme: O and its prefixes (B-/I- for IOB2 and IOB1, any for auto) with a type."""
    if is_tag(tag, tag_scheme):
        return
    # auto names IOB2, the scheme of almost every file, in the same words as before other schemes were read
    prefixes = PREFIXES["iob2" if tag_scheme == "auto" else tag_scheme]
    choices = ", ".join(f"{prefix}-<TYPE>" for prefix in prefixes[:-1]) + f" or {prefixes[-1]}-<TYPE>"
    name = DISPLAY_NAMES.get(tag_scheme, "IOB2")
    raise UsageError(f"{where}: tag {tag!r} is not {name}; use O, {choices} (e.g. B-PER)")


def as_iob2(sentences: list[dict], tag_lines: list[list[int]], path: Path, tag_scheme: str) -> list[dict]:
    """The sentences with their tags read in the file's scheme and converted to IOB2; one log line says how."""
    if not sentences:
        return sentences
    tags_as_written = [sentence["tags"] for sentence in sentences]
    scheme, tag_lists = read_as_iob2(tags_as_written, tag_lines, str(path), tag_scheme)
    for sentence, tags in zip(sentences, tag_lists):
        sentence["tags"] = tags
    converted = tag_lists != tags_as_written
    logger.info("%s: tags read as %s", path, f"{DISPLAY_NAMES[scheme]}, converted to IOB2" if converted else "IOB2")
    return sentences


def read_conll(path: Path, tag_scheme: str = "auto") -> list[dict]:
    """Token and tag per line (tab or space separated, tag last), blank line between sentences; -DOCSTART- lines
    and comment lines before a sentence ("# id ...", as in MultiCoNER or CoNLL-U) are skipped."""
    tag_scheme = scheme_name(tag_scheme)
    sentences, tag_lines = [], []  # tag_lines: the line of each tag, for errors found once the whole file is read
    tokens, tags, numbers = [], [], []
    for number, line in numbered_lines(path):
        line = line.rstrip()  # trailing spaces or tabs are not an empty tag column
        if not line:
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags, "line": numbers[0]})
                tag_lines.append(numbers)
                tokens, tags, numbers = [], [], []
            continue
        is_comment = line.startswith("#") and not tokens and not is_tag(line.split()[-1], tag_scheme)
        if line.startswith("-DOCSTART-") or is_comment:
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if len(columns) < 2:
            raise UsageError(
                f"{path}:{number}: expected 'token<TAB>tag' but found one column ({line[:40]!r}); "
                "add the tag column or a blank line between sentences"
            )
        check_tag(columns[-1].strip(), f"{path}:{number}", tag_scheme)
        tokens.append(columns[0])
        tags.append(columns[-1].strip())
        numbers.append(number)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags, "line": numbers[0]})
        tag_lines.append(numbers)
    return as_iob2(sentences, tag_lines, path, tag_scheme)


def read_jsonl(path: Path, tag_scheme: str = "auto") -> list[dict]:
    """One JSON object a line with "tokens" and "ner_tags" (string tags) of equal length."""
    tag_scheme = scheme_name(tag_scheme)
    sentences, tag_lines = [], []
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{where}: not valid JSON ({error.msg}); write one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("tokens"), list):
            raise UsageError(f'{where}: expected an object with "tokens" and "ner_tags" lists')
        tokens, tags = row["tokens"], row.get("ner_tags", row.get("tags"))
        if not all(isinstance(t, str) for t in tokens):
            raise UsageError(f'{where}: "tokens" must be a list of strings (words), found {tokens[:5]!r}')
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UsageError(f'{where}: "ner_tags" must be a list of string tags such as "B-PER"')
        if len(tokens) != len(tags):
            raise UsageError(f"{where}: {len(tokens)} tokens but {len(tags)} ner_tags; give exactly one tag per token")
        for tag in tags:
            check_tag(tag, where, tag_scheme)
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "line": number})
            tag_lines.append([number] * len(tags))
    return as_iob2(sentences, tag_lines, path, tag_scheme)


def find_split_file(directory: Path, split: str) -> Path | None:
    """The one file of a split in directory: <name>.<conll|txt|tsv|iob|iob2|jsonl>, the name one of the split's."""
    names = SPLIT_NAMES.get(split, (split,))
    candidates = [directory / f"{name}{suffix}" for name in names for suffix in CONLL_SUFFIXES + JSONL_SUFFIXES]
    existing = [path for path in candidates if path.is_file()]
    if len(existing) > 1:
        raise UsageError(
            f"{directory}: several files for split '{split}' ({', '.join(p.name for p in existing)}); keep one"
        )
    return existing[0] if existing else None


def check_data_dir(directory: str) -> Path:
    """An existing directory; a split file given instead is named with the fix."""
    root = Path(directory)
    if root.is_file():
        raise UsageError(f"--data-dir {directory}: is a file; pass the directory that holds it ({root.parent})")
    if not root.is_dir():
        raise UsageError(
            f"--data-dir {directory}: directory not found; pass a directory holding train/validation files"
        )
    return root


def missing_split(root: Path, split: str) -> UsageError:
    names = " or ".join(f"{name}.conll" for name in SPLIT_NAMES.get(split, (split,)))
    return UsageError(f"{root}: no {split} file; add {names} (token<TAB>tag lines, or .txt, .jsonl) to the directory")


def read_split(path: Path, tag_scheme: str = "auto") -> list[dict]:
    """The sentences of one split file, CoNLL or JSON Lines by its suffix, with IOB2 tags."""
    reader = read_jsonl if path.suffix in JSONL_SUFFIXES else read_conll
    sentences = reader(path, tag_scheme)
    if not sentences:
        raise UsageError(f"{path}: no sentences found; the split file is empty")
    return sentences


def load_local_dir(directory: str, tag_scheme: str = "auto") -> dict[str, list[dict]]:
    """Read the train and validation files of one local directory (each file's scheme detected on its own)."""
    root = check_data_dir(directory)
    splits = {}
    for split in TRAINING_SPLITS:
        path = find_split_file(root, split)
        if path is None:
            raise missing_split(root, split)
        splits[split] = read_split(path, tag_scheme)
    return splits


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


def load_corpus(
    data_dirs: list[str] | None,
    dataset: str,
    languages: list[str],
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    fractions: list[float] | None = None,
    seed: int = 42,
    tag_scheme: str = "auto",
) -> Corpus:
    """Read every source, derive the label set from training data, and check evaluation tags against it.

    tag_scheme applies to local files (--data-dir); the Hub's PAN-X is IOB2 already."""
    origins = {}  # source name -> where its files are, for messages
    if data_dirs:
        origins = source_names(data_dirs)
        sources = {name: load_local_dir(directory, tag_scheme) for name, directory in origins.items()}
        hub_labels = None
    else:
        sources, hub_labels = {}, None
        for language in languages:
            sources[language], hub_labels = load_hub_panx(dataset, language)
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
