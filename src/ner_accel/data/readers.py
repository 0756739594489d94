"""Read NER files (CoNLL, JSON Lines) into word-level sentences with IOB2 tags; errors name the file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import UsageError
from .lines import numbered_lines
from .tag_schemes import DISPLAY_NAMES, PREFIXES, is_tag, read_as_iob2, scheme_name
from .tag_schemes import TAG_SCHEMES as TAG_SCHEMES

TRAINING_SPLITS = ("train", "validation")  # a test split is only ever read by ner_accel.evaluate --split test
# The file names each split goes by: CoNLL-2003 ships train.txt, valid.txt and test.txt; other corpora say dev.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".iob2")
JSONL_SUFFIXES = (".jsonl",)

logger = logging.getLogger(__name__)


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
