"""Tokenize word-level datasets once (datasets.map), labels aligned, memory-mapped in an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import datasets
from datasets import Dataset

from ..errors import WriteFailed, write_failure
from ..inference.windows import Windowing, word_pieces
from .alignment import IGNORE, align_labels, inside_ids

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: scoring rows in windows


def encode_batch(batch: dict, tokenizer, label2id: dict[str, int], max_length: int, label_all_tokens: bool) -> dict:
    """datasets.map function: tokenize pre-split words, align labels, count words that lost every sub-token."""
    encoded = tokenizer(
        batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length, return_token_type_ids=False
    )
    inside = inside_ids(list(label2id))
    labels, words_lost = [], []
    for row, tags in enumerate(batch["tags"]):
        word_ids = encoded.word_ids(row)
        labels.append(align_labels(word_ids, [label2id[t] for t in tags], label_all_tokens, inside))
        words_lost.append(len(tags) - len({w for w in word_ids if w is not None}))
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": labels,
        "length": [len(ids) for ids in encoded["input_ids"]],
        "words_lost": words_lost,
    }


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies the tokenizer by content, so a changed vocabulary never reuses a stale cache. The truncation and
    padding a call sets on the backend are left out (the first tokenization would change the key of the next):
    they are switched off for the serialisation and then put back. The serialisation is hashed as it stands (its
    vocabulary is written in id order): parsing XLM-R's 17 MB of JSON to sort its keys took 0.6 s, twice a run."""
    backend = tokenizer.backend_tokenizer
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        state = backend.to_str()
    finally:
        if truncation is not None:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def content_fingerprint(words: Dataset) -> str:
    """Identifies the sentences by their content (every column), so a changed data file never reuses a stale
    cache, whatever datasets' own fingerprint of an in-memory dataset is made of."""
    digest = hashlib.sha256()
    for column, values in sorted(words[:].items()):
        digest.update(json.dumps([column, values], ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def check_cache(path: Path, name: str, whole: Callable[[Dataset], str | None]) -> None:
    """Remove a cache file that does not read back whole (truncated by a kill or a full disk), with a warning:
    datasets would otherwise fail on it, or serve fewer rows. whole: what is missing from a readable file, if any."""
    if not path.exists():
        return
    try:
        problem = whole(Dataset.from_file(str(path)))
    except Exception as error:  # whatever pyarrow raises for a damaged stream
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        logger.warning("%s: tokenization cache %s is damaged (%s); rebuilding it", name, path, problem)
        path.unlink()


def cached_map(
    words: Dataset, tokenizer, settings: list, function, name: str, whole, cache_dir: str | None, with_indices=False
) -> Dataset:
    """words.map(function) (batched), cached by content: the words, the tokenizer and `settings`."""
    key = json.dumps([FORMAT_VERSION, content_fingerprint(words), tokenizer_fingerprint(tokenizer), *settings])
    cache = Path(cache_dir or os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE) / "ner_accel"
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    cache_file = cache / f"encoded-{digest}.arrow"
    check_cache(cache_file, name, whole)
    try:
        return words.map(
            function,
            batched=True,
            with_indices=with_indices,
            remove_columns=words.column_names,
            cache_file_name=str(cache_file),
            new_fingerprint=digest,
            desc=f"Tokenizing {name}",
        )
    except Exception as error:  # datasets removes its temporary file itself
        reason = write_failure(error, cache)
        if reason is None:
            raise
        raise WriteFailed(f"cannot write the tokenization cache {cache_file} ({reason})", reason) from None


def encode_dataset(
    words: Dataset,
    tokenizer,
    labels: list[str],
    max_length: int,
    label_all_tokens: bool,
    name: str,
    cache_dir: str | None = None,
) -> Dataset:
    """Training rows: sub-token inputs cut to max_length and aligned labels for every sentence, cached by content.
    Training may truncate (a word past the cut is not trained on); scoring never does (encode_for_scoring)."""

    def whole(cached: Dataset) -> str | None:
        return None if cached.num_rows == len(words) else f"{cached.num_rows} rows for {len(words)} sentences"

    function = partial(
        encode_batch,
        tokenizer=tokenizer,
        label2id={label: i for i, label in enumerate(labels)},
        max_length=max_length,
        label_all_tokens=label_all_tokens,
    )
    encoded = cached_map(words, tokenizer, [labels, max_length, label_all_tokens], function, name, whole, cache_dir)
    lost = encoded["words_lost"]
    if any(lost):
        sentences = sum(1 for n in lost if n)
        logger.warning(
            "%s: %d words in %d sentences have no sub-token within --max-length %d (cut or empty after "
            "tokenization); they are not trained on (evaluation scores every word)",
            name,
            sum(lost),
            sentences,
            max_length,
        )
    return encoded


def encode_scoring_batch(batch: dict, indices: list[int], tokenizer, label2id: dict[str, int], windowing: Windowing):
    """datasets.map function: each sentence as the windows predict would tag it through, one row a window. A word
    is labelled (its gold id at its first sub-token, its index in `word_index`) in the one window it takes its tag
    from, so every word with a sub-token is scored exactly once however long the sentence."""
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "word_index": [], "sentence": [], "length": []}
    for sentence, tags, pieces in zip(indices, batch["tags"], word_pieces(tokenizer, batch["tokens"])):
        for window in windowing.windows(pieces):
            labels, words = [IGNORE] * len(window.input_ids), [IGNORE] * len(window.input_ids)
            for offset, (first, central) in enumerate(zip(window.firsts, window.central)):
                if central and first is not None:
                    labels[first], words[first] = label2id[tags[window.start + offset]], window.start + offset
            rows["input_ids"].append(window.input_ids)
            rows["attention_mask"].append([1] * len(window.input_ids))
            rows["labels"].append(labels)
            rows["word_index"].append(words)
            rows["sentence"].append(sentence)
            rows["length"].append(len(window.input_ids))
    return rows


def encode_for_scoring(
    words: Dataset, tokenizer, labels: list[str], windowing: Windowing, name: str, cache_dir: str | None = None
) -> Dataset:
    """Scoring rows (validation, evaluate): every sentence whole, in windows as predict tags raw text."""

    def whole(cached: Dataset) -> str | None:
        last = cached[-1]["sentence"] if cached.num_rows else -1
        return None if last == len(words) - 1 else f"windows up to sentence {last + 1} of {len(words)}"

    function = partial(
        encode_scoring_batch,
        tokenizer=tokenizer,
        label2id={label: i for i, label in enumerate(labels)},
        windowing=windowing,
    )
    settings = ["scoring", labels, windowing.budget, windowing.overlap]
    return cached_map(words, tokenizer, settings, function, name, whole, cache_dir, with_indices=True)
