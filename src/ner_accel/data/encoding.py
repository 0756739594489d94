"""Tokenize word-level datasets once (datasets.map), labels aligned, memory-mapped in an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from functools import partial
from pathlib import Path

import datasets
from datasets import Dataset

from ..errors import WriteFailed, write_failure
from .alignment import align_labels, inside_ids

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1


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


def check_cache(path: Path, rows: int, name: str) -> None:
    """Remove a cache file that does not read back whole (truncated by a kill or a full disk), with a warning:
    datasets would otherwise fail on it, or serve fewer rows."""
    if not path.exists():
        return
    try:
        cached = Dataset.from_file(str(path))
        problem = None if cached.num_rows == rows else f"{cached.num_rows} rows for {rows} sentences"
    except Exception as error:  # whatever pyarrow raises for a damaged stream
        problem = f"{type(error).__name__}: {error}"
    if problem is not None:
        logger.warning("%s: tokenization cache %s is damaged (%s); rebuilding it", name, path, problem)
        path.unlink()


def encode_dataset(
    words: Dataset,
    tokenizer,
    labels: list[str],
    max_length: int,
    label_all_tokens: bool,
    name: str,
    cache_dir: str | None = None,
) -> Dataset:
    """Sub-token inputs and aligned labels for every sentence, cached by content (words, tokenizer, settings)."""
    key = json.dumps(
        [FORMAT_VERSION, content_fingerprint(words), tokenizer_fingerprint(tokenizer), labels, max_length,
         label_all_tokens]
    )  # fmt: skip
    cache = Path(cache_dir or os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE) / "ner_accel"
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    cache_file = cache / f"encoded-{digest}.arrow"
    check_cache(cache_file, len(words), name)
    try:
        encoded = words.map(
            partial(
                encode_batch,
                tokenizer=tokenizer,
                label2id={label: i for i, label in enumerate(labels)},
                max_length=max_length,
                label_all_tokens=label_all_tokens,
            ),
            batched=True,
            remove_columns=["tokens", "tags"],
            cache_file_name=str(cache_file),
            new_fingerprint=digest,
            desc=f"Tokenizing {name}",
        )
    except Exception as error:  # datasets removes its temporary file itself
        reason = write_failure(error, cache)
        if reason is None:
            raise
        raise WriteFailed(f"cannot write the tokenization cache {cache_file} ({reason})", reason) from None
    lost = encoded["words_lost"]
    if any(lost):
        sentences = sum(1 for n in lost if n)
        logger.warning(
            "%s: %d words in %d sentences have no sub-token within --max-length %d (cut or empty after "
            "tokenization); they are neither trained nor scored",
            name,
            sum(lost),
            sentences,
            max_length,
        )
    return encoded
