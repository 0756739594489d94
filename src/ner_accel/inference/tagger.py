"""Tag raw texts with a trained token classifier: entities with type, character offsets, surface text and score.

Each word is tagged by its first sub-token (as in training), and texts longer than the model's limit are tagged in
overlapping windows, each word taking its tags from the window where it sits most central.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..modeling.loading import load_tokenizer, load_trained, sequence_limit
from ..modeling.unpadding import UNPADDED, Packing
from ..rundir.artifacts import MODEL_DIR
from .entities import extract_entities
from .windows import central_windows, plan_windows
from .words import split_words


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
        limit = sequence_limit(tokenizer, max_length)
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
        inputs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        if self.model.config._attn_implementation == UNPADDED:  # on real tokens only, packed on the host
            inputs["packing"] = Packing.of_lengths([len(ids) for ids, _ in batch], width).to(device)
        logits = self.model(**inputs).logits
        probabilities = logits.float().softmax(dim=-1).cpu().numpy()
        out = []
        for row, (_, firsts) in enumerate(batch):
            word_rows = np.full((len(firsts), probabilities.shape[-1]), np.nan, dtype=np.float32)
            kept = [i for i, first in enumerate(firsts) if first is not None]  # invisible words keep NaN rows
            word_rows[kept] = probabilities[row, [firsts[i] for i in kept]]
            out.append(word_rows)
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
        window_probabilities = {}
        for first in range(0, len(jobs), self.batch_size):
            batch = jobs[first : first + self.batch_size]
            for (doc, window, *_), probabilities in zip(batch, self.word_probabilities([job[2:] for job in batch])):
                window_probabilities[doc, window] = probabilities
                remaining[doc] -= 1
                if progress is not None and remaining[doc] == 0:
                    progress.update(1)
        results = [[] for _ in texts]
        for doc in with_words:
            chosen = central_windows(plans[doc], len(words[doc]))
            rows = np.stack([window_probabilities[doc, w][word - plans[doc][w][0]] for word, w in enumerate(chosen)])
            results[doc] = self.entities(texts[doc], spans[doc], rows)
        return results

    def entities(self, text: str, spans: list[tuple[int, int]], probabilities: np.ndarray) -> list[dict]:
        """Entities from per-word probabilities; score: the mean probability of its words' tags.

        Words without sub-tokens (a zero-width space standing alone) are invisible to the model: entities are
        grouped over the words it sees, so such a word inside an entity joins it, and one at its edge stays out.
        """
        id2label = self.model.config.id2label
        seen = np.flatnonzero(~np.isnan(probabilities[:, 0]))  # the words with a sub-token, in order
        best = probabilities[seen].argmax(axis=-1)
        entities = []
        for kind, first, last in extract_entities([id2label[int(i)] for i in best]):
            start, end = spans[seen[first]][0], spans[seen[last - 1]][1]
            score = float(np.mean([probabilities[seen[w], best[w]] for w in range(first, last)]))
            entities.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": score})
        return entities
