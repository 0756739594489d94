"""Tag raw text with a trained model: entities with type, character offsets, surface text and score, as JSON Lines.

Texts as arguments (one document each):
    python -m ner_accel.predict --model artifacts/run "Angela Merkel besuchte Paris." "Jeff Dean works at Google."
A text file (one document per line) or JSON Lines ({"text": ...} per line, other fields kept):
    python -m ner_accel.predict --model artifacts/run --input docs.txt --output entities.jsonl

Text is split into words as PAN-X is: at whitespace, with punctuation marks and CJK ideographs words of their own,
except that hyphens, apostrophes and periods between letters or digits stay inside a word (Baden-Württemberg,
d'Italie, U.S, 6–3) and a final 's is a word (Merkel 's). Each word is tagged by its first sub-token (as in training),
and texts longer than the model's limit are tagged in overlapping windows, each word taking its tags from the window
where it sits most central. On text without those word-internal marks the same model gives the same entities as
transformers.pipeline("token-classification", aggregation_strategy="first") (BERT-style tokenizers, which split at
every punctuation mark; see tests/test_predict.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifacts import MODEL_DIR, check_output_file
from .errors import UsageError, run_command
from .lines import numbered_lines
from .model import load_tokenizer, load_trained

# ---------------------------------------------------------------------------------------------------------------
# Words: PAN-X splits punctuation from words; BERT's basic tokenizer draws the same lines, which is what keeps
# offsets identical to the token-classification pipeline.


@lru_cache(maxsize=65536)
def is_separate(char: str) -> bool:
    """Punctuation (ASCII symbols and Unicode P*) and CJK ideographs form words of their own, as in BERT."""
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    cjk = (
        (0x4E00, 0x9FFF),
        (0x3400, 0x4DBF),
        (0x20000, 0x2A6DF),
        (0x2A700, 0x2B81F),
        (0xF900, 0xFAFF),
        (0x2F800, 0x2FA1F),
    )
    return unicodedata.category(char).startswith("P") or any(low <= code <= high for low, high in cjk)


CONNECTORS = frozenset("-\u2010\u2011\u2013'\u2019.")  # hyphens, en dash, apostrophes, period


def joins(text: str, i: int) -> bool:
    """A connector between two letters or digits stays inside its word, as in PAN-X's Baden-Württemberg,
    États-Unis, d'Italie, U.S and 6–3."""
    return 0 < i < len(text) - 1 and text[i] in CONNECTORS and text[i - 1].isalnum() and text[i + 1].isalnum()


def is_possessive(text: str, i: int) -> bool:
    """The apostrophe of a word-final 's, which PAN-X writes as a word of its own (Merkel 's)."""
    end = i + 2
    return text[i] in "'\u2019" and text[i + 1 : end] in ("s", "S") and (end == len(text) or not text[end].isalnum())


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the words of text; text[start:end] is always the word itself."""
    spans, start = [], None
    for i, char in enumerate(text):
        inside = joins(text, i)
        if inside and start is not None and is_possessive(text, i):
            spans.append((start, i))
            start = i  # 's: a word of its own
        elif char.isspace() or (is_separate(char) and not inside):
            if start is not None:
                spans.append((start, i))
                start = None
            if not char.isspace():
                spans.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


# ---------------------------------------------------------------------------------------------------------------
# Pure logic: windows over long texts, and entities from word tags


def plan_windows(counts: list[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) whose sub-tokens fit `budget`; each window repeats up to `overlap` sub-tokens of
    the previous one. A single word longer than the budget gets a window of its own (cut to the budget)."""
    windows, start = [], 0
    while start < len(counts):
        end, used = start, 0
        while end < len(counts) and (end == start or used + counts[end] <= budget):
            used, end = used + counts[end], end + 1
        windows.append((start, end))
        if end == len(counts):
            break
        following, repeated = end, 0
        while following - 1 > start and repeated + counts[following - 1] <= overlap:
            following, repeated = following - 1, repeated + counts[following - 1]
        start = following
    return windows


def central_windows(windows: list[tuple[int, int]], num_words: int) -> list[int]:
    """For each word, the window where it has the most context on its shorter side (the first such on ties)."""
    best, margin = [0] * num_words, [-1] * num_words
    for index, (start, end) in enumerate(windows):
        for word in range(start, end):
            room = min(word - start, end - 1 - word)
            if room > margin[word]:
                best[word], margin[word] = index, room
    return best


def extract_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1): B-X, or a type other than the previous word's, starts an entity.

    The pipeline's grouping (and seqeval's default): I-X after O starts an entity; a tag without prefix counts as I-.
    """
    entities, previous = [], "O"
    for index, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else tag
        if tag == "O":
            pass
        elif tag.startswith("B-") or kind != previous:
            entities.append([kind, index, index + 1])
        else:
            entities[-1][2] = index + 1
        previous = kind
    return [tuple(entity) for entity in entities]


# ---------------------------------------------------------------------------------------------------------------
# The tagger


@dataclass
class Tagger:
    """A trained model and its tokenizer, tagging batches of raw texts."""

    model: torch.nn.Module
    tokenizer: object
    max_length: int
    overlap: int
    batch_size: int = 32

    def __post_init__(self) -> None:
        # The special tokens around one sequence (e.g. [CLS] ... [SEP]), read off a one-word encoding.
        sample = self.tokenizer(["a"], is_split_into_words=True)
        words = [i for i, word in enumerate(sample.word_ids()) if word is not None]
        self.prefix = sample["input_ids"][: words[0]]
        self.suffix = sample["input_ids"][words[-1] + 1 :]
        self.budget = self.max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 1:
            raise UsageError(f"--max-length {self.max_length} leaves no room for words next to the special tokens")
        if not 0 <= self.overlap < self.budget:
            raise UsageError(f"--overlap must lie in [0, {self.budget}) sub-tokens, got {self.overlap}")

    @classmethod
    def load(
        cls,
        path: str,
        max_length: int | None = None,
        overlap: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> Tagger:
        """From a run directory (with model/) or a model directory, with any transformers token classifier."""
        root = Path(path)
        directory = root / MODEL_DIR if (root / MODEL_DIR / "config.json").is_file() else root
        if not (directory / "config.json").is_file():
            raise UsageError(f"--model {path}: no trained model here; pass a run directory or a model directory")
        tokenizer = load_tokenizer(str(directory), trust_remote_code)
        model = load_trained(str(directory), trust_remote_code)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        limit = min(max_length or tokenizer.model_max_length, tokenizer.model_max_length, 512)
        return cls(model, tokenizer, limit, limit // 4 if overlap is None else overlap, batch_size)

    def word_pieces(self, words: list[list[str]]) -> list[list[list[int]]]:
        """Sub-token ids of every word, each word tokenized on its own as in training (is_split_into_words)."""
        encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        pieces = []
        for row, row_words in enumerate(words):
            per_word = [[] for _ in row_words]
            for token, word in zip(encoded["input_ids"][row], encoded.word_ids(row)):
                per_word[word].append(token)
            pieces.append(per_word)
        return pieces

    def window_inputs(self, pieces: list[list[int]], start: int, end: int) -> tuple[list[int], list[int | None]]:
        """Input ids of one window and, per word of it, the position of its first sub-token (None: no sub-token)."""
        flat, firsts = [], []
        for word in range(start, end):
            firsts.append(len(flat) + len(self.prefix) if pieces[word] else None)
            flat += pieces[word]
        return self.prefix + flat[: self.budget] + self.suffix, firsts

    @torch.inference_mode()
    def word_probabilities(self, batch: list[tuple[list[int], list[int | None]]]) -> list[np.ndarray]:
        """Label probabilities at each word's first sub-token (NaN rows for words without one)."""
        width = max(len(ids) for ids, _ in batch)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        probabilities = logits.float().softmax(dim=-1).cpu().numpy()
        out = []
        for row, (_, firsts) in enumerate(batch):
            found = np.full((len(firsts), probabilities.shape[-1]), np.nan, dtype=np.float32)
            kept = [i for i, first in enumerate(firsts) if first is not None]
            found[kept] = probabilities[row, [firsts[i] for i in kept]]
            out.append(found)
        return out

    def tag(self, texts: list[str], progress: tqdm | None = None) -> list[list[dict]]:
        """Entities of each text: {"type", "start", "end", "text", "score"}, offsets into the original string."""
        spans = [split_words(text) for text in texts]
        words = [[text[s:e] for s, e in doc] for text, doc in zip(texts, spans)]
        with_words = [i for i, doc in enumerate(words) if doc]
        pieces = dict(zip(with_words, self.word_pieces([words[i] for i in with_words]))) if with_words else {}
        plans = {i: plan_windows([len(p) for p in pieces[i]], self.budget, self.overlap) for i in with_words}
        jobs = [
            (i, w, *self.window_inputs(pieces[i], *window)) for i in with_words for w, window in enumerate(plans[i])
        ]
        jobs.sort(key=lambda job: len(job[2]))  # similar lengths share a batch: little padding
        remaining = {i: len(plans[i]) for i in with_words}
        if progress is not None:
            progress.update(len(texts) - len(with_words))
        found = {}
        for first in range(0, len(jobs), self.batch_size):
            batch = jobs[first : first + self.batch_size]
            for (doc, window, *_), probabilities in zip(batch, self.word_probabilities([job[2:] for job in batch])):
                found[doc, window] = probabilities
                remaining[doc] -= 1
                if progress is not None and remaining[doc] == 0:
                    progress.update(1)
        results = [[] for _ in texts]
        for doc in with_words:
            chosen = central_windows(plans[doc], len(words[doc]))
            rows = np.stack([found[doc, w][word - plans[doc][w][0]] for word, w in enumerate(chosen)])
            results[doc] = self.entities(texts[doc], spans[doc], rows)
        return results

    def entities(self, text: str, spans: list[tuple[int, int]], probabilities: np.ndarray) -> list[dict]:
        """Entities from per-word probabilities; a word without sub-tokens is O. Score: mean word probability."""
        id2label = self.model.config.id2label
        scored = ~np.isnan(probabilities[:, 0])
        best = np.where(scored, np.nan_to_num(probabilities).argmax(axis=-1), -1)
        tags = [id2label[int(i)] if i >= 0 else "O" for i in best]
        entities = []
        for kind, first, last in extract_entities(tags):
            start, end = spans[first][0], spans[last - 1][1]
            score = float(np.mean([probabilities[w, best[w]] for w in range(first, last)]))
            entities.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": score})
        return entities


# ---------------------------------------------------------------------------------------------------------------
# Command line: texts in, JSON Lines out


def is_json_lines(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def read_documents(path: Path, text_field: str) -> Iterator[dict]:
    """{"text": ...} per line of a text file, or the objects of a JSON Lines file (other fields kept)."""
    for number, line in numbered_lines(path):
        if not is_json_lines(path):
            yield {"text": line}
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}:{number}: not valid JSON ({error.msg}); write one object per line") from error
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise UsageError(f'{path}:{number}: expected an object with a "{text_field}" string (see --text-field)')
        yield row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="Texts to tag, one document each.")
    parser.add_argument("--model", required=True, help="Run directory (with model/) or model directory.")
    # Input and output
    parser.add_argument(
        "--input",
        help="Text file (one document a line) or JSON Lines file (.jsonl, .ndjson, .json: objects with --text-field).",
    )
    parser.add_argument("--text-field", default="text", help="Field holding the text in JSON Lines input.")
    parser.add_argument("--output", help="JSON Lines file to write (default: standard output).")
    # Runtime
    parser.add_argument("--batch-size", type=int, default=64, help="Windows per forward pass.")
    parser.add_argument(
        "--max-length", type=int, help="Sub-tokens per window (default: the model's limit, at most 512)."
    )
    parser.add_argument("--overlap", type=int, help="Sub-tokens repeated between windows (default: a quarter).")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument("--chunk-size", type=int, default=4096, help="Documents read and tagged at a time.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow model code from the model directory.")
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts as arguments or --input <file>, not both and not neither")
    if args.input and not Path(args.input).is_file():
        raise UsageError(f"--input {args.input}: file not found")
    for flag in ("batch_size", "chunk_size", "max_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {getattr(args, flag)}")
    if args.device is not None:
        check_device(args.device)
    if args.output is not None:
        check_output_file(args.output, "--output")
        if args.input and Path(args.output).resolve() == Path(args.input).resolve():
            raise UsageError(f"--output {args.output}: is the input file; write the entities to another file")
    return args


def check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device name; pass cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(
            f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} found); pass --device cpu"
        )


def run(args: argparse.Namespace) -> int:
    """Tag every document and write one JSON line per document, in input order; return the number tagged.

    A bad input line fails before any tagging (the count pass reads and checks every line), and --output is
    written beside its target and renamed into place at the end: an error leaves no half-written file and an
    earlier file of that name untouched.
    """
    if args.input:
        path = Path(args.input)
        total = sum(1 for _ in read_documents(path, args.text_field))
        documents = read_documents(path, args.text_field)
        field = args.text_field if is_json_lines(path) else "text"
    else:
        documents, field, total = ({"text": text} for text in args.texts), "text", len(args.texts)
    tagger = Tagger.load(
        args.model, args.max_length, args.overlap, args.batch_size, args.device, args.trust_remote_code
    )
    with (
        output_stream(args.output) as output,
        tqdm(total=total, unit="doc", desc="tagging", disable=not args.input) as progress,
    ):
        count = 0
        while chunk := list(islice(documents, args.chunk_size)):
            for row, entities in zip(chunk, tagger.tag([row[field] for row in chunk], progress)):
                output.write(json.dumps({**row, "entities": entities}, ensure_ascii=False) + "\n")
            count += len(chunk)
    return count


@contextmanager
def output_stream(path: str | None) -> Iterator[TextIO]:
    """Standard output, or a temporary file beside `path` that replaces it only when everything was written."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            yield stream
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 0 on success, 2 on bad input (one line on stderr)."""
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
