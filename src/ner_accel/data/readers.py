"""Read NER files (CoNLL, JSON Lines, annotation-tool exports) into word-level sentences with IOB2 tags; errors name
the file and line."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .annotation_formats import SHAPES, json_rows, read_annotations, row_shape
from .conll_columns import Row, find_layout, log_layout
from .conll_lines import conll_sentences, warn_odd_lines
from .tag_schemes import DISPLAY_NAMES, PREFIXES, is_tag, read_as_iob2, scheme_name
from .tag_schemes import TAG_SCHEMES as TAG_SCHEMES

TRAINING_SPLITS = ("train", "validation")  # a test split is only ever read by ner_accel.evaluate --split test
# The file names each split goes by: CoNLL-2003 ships train.txt, valid.txt and test.txt; other corpora say dev.
SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
CONLL_SUFFIXES = (".conll", ".conllu", ".txt", ".tsv", ".iob", ".iob2")
JSONL_SUFFIXES = (".jsonl",)
JSON_SUFFIXES = (".json",)  # a JSON array: Label Studio's JSON and JSON-MIN exports (or rows of any JSONL shape)
NESTED_SPANS = ("refuse", "outer", "inner")

logger = logging.getLogger(__name__)

# The reading flags' help, the same for train (TrainConfig) and evaluate.
READ_HELP = {
    "token_column": "CoNLL files: the column of the words, 0-based (negative: from the end) or a header line's name "
    "(default: detected: the first column after an index that counts the words); JSON Lines: the field (tokens).",
    "tag_column": "CoNLL files: the column of the tags, as --token-column (default: the one column of tags; several "
    "are refused unless the others are chunk tags or nest inside it); JSON Lines: the field (ner_tags).",
    "annotator": "Label Studio exports: read the annotations of this user (id or email); default: each task's first "
    "annotation that was not cancelled.",
    "snap_spans": "Annotation exports: extend a span that cuts a word to the whole words (each snap counted in the "
    "log) instead of refusing it.",
    "nested_spans": "Annotation exports: a span inside another is refused (IOB tags hold one level), or only the "
    "outer or the inner ones are kept (the others counted in the log).",
}


@dataclass(frozen=True)
class ReadOptions:
    """How local data files are read, for training (through CorpusOptions) and evaluation alike."""

    tag_scheme: str = "auto"  # one of TAG_SCHEMES (or iobes); auto: detected per file
    token_column: str | None = None  # CoNLL column or JSON Lines field of the words; None: detected
    tag_column: str | None = None  # CoNLL column or JSON Lines field of the tags; None: detected
    annotator: str | None = None  # Label Studio: whose annotation; None: each task's first not cancelled
    snap_spans: bool = False  # annotation exports: extend spans that cut words to whole words
    nested_spans: str = "refuse"  # annotation exports: refuse nested spans, or keep the outer or inner ones

    def __post_init__(self) -> None:
        scheme_name(self.tag_scheme)  # an unknown scheme fails here, with its message
        for flag, value in (("--token-column", self.token_column), ("--tag-column", self.tag_column)):
            if value is not None and not str(value).strip():
                raise UsageError(f"{flag}: empty; pass a 0-based column number or a header name")
        if self.token_column is not None and str(self.token_column).strip() == str(self.tag_column).strip():
            raise UsageError(
                f"--token-column {self.token_column} and --tag-column {self.tag_column}: the same column; "
                "the words and the tags are two columns"
            )
        if self.nested_spans not in NESTED_SPANS:
            raise UsageError(f"--nested-spans {self.nested_spans!r}: use one of {', '.join(NESTED_SPANS)}")

    @classmethod
    def of(cls, source: object) -> ReadOptions:
        """The reading options among the attributes of source (TrainConfig, CorpusOptions, evaluate's arguments)."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})


def read_options(options: ReadOptions | str) -> ReadOptions:
    """ReadOptions as given, or a tag scheme's name alone (the readers' older calling form)."""
    return ReadOptions(tag_scheme=options) if isinstance(options, str) else options


# ---------------------------------------------------------------------------------------------------------------
# Readers: one sentence = {"tokens": [...], "tags": [...]} with IOB2 tags, whatever the file's scheme (tag_scheme:
# one of TAG_SCHEMES, "auto" detects it per file); errors name the file, the line and the fix.


def check_tag(tag: str, where: str, tag_scheme: str = "iob2", hint: str = "") -> None:
    """Accept the tags of the scheme: O and its prefixes (B-/I- for IOB2 and IOB1, any for auto) with a type."""
    if is_tag(tag, tag_scheme):
        return
    # auto names IOB2, the scheme of almost every file, in the same words as before other schemes were read
    prefixes = PREFIXES["iob2" if tag_scheme == "auto" else tag_scheme]
    choices = ", ".join(f"{prefix}-<TYPE>" for prefix in prefixes[:-1]) + f" or {prefixes[-1]}-<TYPE>"
    name = DISPLAY_NAMES.get(tag_scheme, "IOB2")
    raise UsageError(f"{where}: tag {tag!r} is not {name}; use O, {choices} (e.g. B-PER){hint}")


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


def read_conll(path: Path, options: ReadOptions | str = "auto") -> list[dict]:
    """Token and tag per line (tab or space separated), blank line between sentences; which columns hold the
    words and the tags is detected (conll_columns) or given; -DOCSTART- lines and comment lines ("# id ...", as in
    MultiCoNER, CoNLL-U or GermEval) are skipped."""
    options = read_options(options)
    tag_scheme = scheme_name(options.tag_scheme)
    blocks, names, odd = conll_sentences(path)
    warn_odd_lines(path, odd)
    for row in (row for block in blocks for row in block if not row.hash_line):
        if len(row.columns) < 2:
            raise UsageError(
                f"{path}:{row.number}: expected 'token<TAB>tag' but found one column ({row.columns[0][:40]!r}); "
                "add the tag column or a blank line between sentences"
            )
    layout = find_layout(blocks, path, options.token_column, options.tag_column, tag_scheme, names)
    hint = (
        "" if layout.width <= 2 else f", or pass --tag-column if the tags are in another of its {layout.width} columns"
    )
    sentences, tag_lines, skipped, valid = [], [], {"comment": 0, "extra": 0}, set()
    special = layout.header_line is not None or layout.index is not None
    for block in blocks:
        tokens, tags, numbers = [], [], []
        for row in block:
            if row.hash_line or special:  # comments, the header, CoNLL-U's extra lines
                if row.number == layout.header_line:
                    continue
                if (row.hash_line and layout.is_comment(row)) or layout.is_extra_node(row):
                    skipped["comment" if row.hash_line else "extra"] += 1
                    continue
            token, tag = cell(row, layout.token, "--token-column", path), cell(row, layout.tag, "--tag-column", path)
            tag = tag.strip()
            if tag not in valid:  # each distinct tag checked once
                check_tag(tag, f"{path}:{row.number}", tag_scheme, hint)
                valid.add(tag)
            tokens.append(token)
            tags.append(tag)
            numbers.append(row.number)
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "line": numbers[0]})
            tag_lines.append(numbers)
    log_layout(path, layout, skipped)
    return as_iob2(sentences, tag_lines, path, tag_scheme)


def cell(row: Row, ref: int, flag: str, path: Path) -> str:
    try:
        return row.columns[ref]
    except IndexError:
        raise UsageError(
            f"{path}:{row.number}: the line has {len(row.columns)} columns, none at {ref} ({flag}); "
            "give every line the same columns"
        ) from None


def read_jsonl(path: Path, options: ReadOptions | str = "auto") -> list[dict]:
    """One JSON object a line: {"tokens": [...], "ner_tags": [...]} (string tags of equal length), or an annotation
    tool's rows (doccano, spaCy/Prodigy, Label Studio JSON-MIN), told apart by their keys."""
    return read_json_rows(path, json_rows(path), read_options(options))


def read_json(path: Path, options: ReadOptions | str = "auto") -> list[dict]:
    """A JSON array (Label Studio's JSON or JSON-MIN export, or objects of any JSON Lines shape)."""
    return read_json_rows(path, json_rows(path), read_options(options))


def read_json_rows(path: Path, rows: list[tuple[int, object]], options: ReadOptions) -> list[dict]:
    """Token rows or annotation-tool rows, by the keys of the first row; a file mixing shapes is refused."""
    shapes = {}
    for number, row in rows:
        shape = row_shape(row, f"{path}:{number}")
        shapes.setdefault(shape, number)
        if len(shapes) > 1:
            (first, first_line), (other, _) = shapes.items()
            raise UsageError(
                f"{path}:{number}: a {SHAPES[other]} in a file whose line {first_line} is a {SHAPES[first]}; "
                "keep one format per file"
            )
    if not shapes or "tokens" in shapes:
        return token_rows(path, rows, options)
    return read_annotations(path, rows, next(iter(shapes)), options)


def token_rows(path: Path, rows: list[tuple[int, object]], options: ReadOptions) -> list[dict]:
    """{"tokens": [...], "ner_tags": [...]} rows (the fields named by --token-column / --tag-column)."""
    tag_scheme = scheme_name(options.tag_scheme)
    for flag, value in (("--token-column", options.token_column), ("--tag-column", options.tag_column)):
        if value is not None and str(value).strip().lstrip("-").isdigit():
            raise UsageError(
                f"{flag} {value}: {path} holds JSON objects, whose fields have names; pass the field's name "
                f"(e.g. {flag} {'tokens' if flag == '--token-column' else 'ner_tags'})"
            )
    token_field = options.token_column or "tokens"
    sentences, tag_lines = [], []
    for number, row in rows:
        where = f"{path}:{number}"
        if not isinstance(row, dict) or not isinstance(row.get(token_field), list):
            keys = (
                f" (keys: {', '.join(map(str, row))}; --token-column names the words)" if isinstance(row, dict) else ""
            )
            raise UsageError(f'{where}: expected an object with "{token_field}" and "ner_tags" lists{keys}')
        tag_field = options.tag_column or ("tags" if "tags" in row and "ner_tags" not in row else "ner_tags")
        tokens, tags = row[token_field], row.get(tag_field)
        if tags is None:
            lists = [key for key, value in row.items() if key != token_field and isinstance(value, list)]
            fix = f"it has {', '.join(lists)}: pass --tag-column with the tags' field" if lists else "add the tags"
            raise UsageError(f'{where}: no "{tag_field}" list beside "{token_field}"; {fix}')
        if not all(isinstance(t, str) for t in tokens):
            raise UsageError(f'{where}: "{token_field}" must be a list of strings (words), found {tokens[:5]!r}')
        if isinstance(tags, list) and tags and all(isinstance(t, int) for t in tags):
            raise UsageError(
                f'{where}: "{tag_field}" holds class numbers ({tags[:5]}); write the tag names instead '
                '(datasets: features["ner_tags"].feature.int2str)'
            )
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UsageError(f'{where}: "{tag_field}" must be a list of string tags such as "B-PER"')
        if len(tokens) != len(tags):
            raise UsageError(
                f"{where}: {len(tokens)} tokens but {len(tags)} {tag_field}; give exactly one tag per token"
            )
        for tag in tags:
            check_tag(tag, where, tag_scheme)
        if tokens:
            sentences.append({"tokens": tokens, "tags": tags, "line": number})
            tag_lines.append([number] * len(tags))
    return as_iob2(sentences, tag_lines, path, tag_scheme)


def find_split_file(directory: Path, split: str) -> Path | None:
    """The one file of a split in directory: <name>.<conll|txt|tsv|...|jsonl|json>, the name one of the split's."""
    names = SPLIT_NAMES.get(split, (split,))
    suffixes = CONLL_SUFFIXES + JSONL_SUFFIXES + JSON_SUFFIXES
    candidates = [directory / f"{name}{suffix}" for name in names for suffix in suffixes]
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
    return UsageError(
        f"{root}: no {split} file; add {names} (token<TAB>tag lines, or .txt, .jsonl, a Label Studio .json) "
        "to the directory"
    )


def read_split(path: Path, options: ReadOptions | str = "auto") -> list[dict]:
    """The sentences of one split file, CoNLL, JSON Lines or JSON by its suffix, with IOB2 tags."""
    suffix = path.suffix.lower()
    reader = read_jsonl if suffix in JSONL_SUFFIXES else read_json if suffix in JSON_SUFFIXES else read_conll
    sentences = reader(path, read_options(options))
    if not sentences:
        raise UsageError(f"{path}: no sentences found; the split file is empty")
    return sentences


def load_local_dir(directory: str, options: ReadOptions | str = "auto") -> dict[str, list[dict]]:
    """Read the train and validation files of one local directory (each file's layout and scheme its own)."""
    root = check_data_dir(directory)
    splits = {}
    for split in TRAINING_SPLITS:
        path = find_split_file(root, split)
        if path is None:
            raise missing_split(root, split)
        splits[split] = read_split(path, options)
    return splits
