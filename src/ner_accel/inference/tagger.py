"""Tag raw texts with a trained token classifier: entities with type, character offsets, surface text and score.

Each word is tagged by its first sub-token (as in training), and texts longer than the model's limit are tagged in
overlapping windows, each word taking its tags from the window where it sits most central.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..modeling.loading import load_tokenizer, load_trained, sequence_limit
from ..modeling.unpadding import UNPADDED, Packing
from ..rundir.artifacts import MODEL_DIR
from .decoding import DEFAULT_DECODING, decode
from .entities import extract_entities
from .onnx_model import OnnxTokenClassifier, is_export
from .windows import Window, Windowing, word_pieces
from .words import split_words


@dataclass
class Tagger:
    """A trained model and its tokenizer, tagging batches of raw texts."""

    model: torch.nn.Module
    tokenizer: object
    windowing: Windowing  # how texts are cut into model inputs (the same as evaluation's)
    batch_size: int = 32
    decoding: str = DEFAULT_DECODING  # how tags are read from word probabilities (inference/decoding.py)
    # Padded tokens a batch may hold (rows times its longest window): batch_size sentences fit many times over, and
    # long documents' 512-token windows go 16 to a batch, which bounds a padded forward's attention scores (an ONNX
    # export materialises them: 64 such windows took 6.4 GB).
    max_batch_tokens: int = 8192

    @classmethod
    def load(
        cls,
        path: str,
        max_length: int | None = None,
        overlap: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        trust_remote_code: bool = False,
        decoding: str = DEFAULT_DECODING,
    ) -> Tagger:
        """From a run directory (with model/), a model directory (any transformers token classifier) or an ONNX
        export (ner_accel.export: onnxruntime on the CPU, behind the same interface)."""
        root = Path(path)
        directory = root / MODEL_DIR if (root / MODEL_DIR / "config.json").is_file() else root
        if not (directory / "config.json").is_file():
            raise UsageError(f"--model {path}: no trained model here; pass a run directory or a model directory")
        tokenizer = load_tokenizer(str(directory), trust_remote_code)
        if is_export(directory):
            if device not in (None, "cpu"):
                raise UsageError(f"--device {device}: an ONNX export runs on the CPU (onnxruntime); drop --device")
            model = OnnxTokenClassifier(directory)
        else:
            model = load_trained(str(directory), trust_remote_code)
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        windowing = Windowing.of(tokenizer, sequence_limit(tokenizer, max_length), overlap)
        return cls(model, tokenizer, windowing, batch_size, decoding)

    def word_pieces(self, words: list[list[str]]) -> list[list[list[int]]]:
        """Sub-token ids of every word, each word tokenized on its own as in training (is_split_into_words)."""
        return word_pieces(self.tokenizer, words)

    @torch.inference_mode()
    def word_probabilities(self, batch: list[Window]) -> list[np.ndarray]:
        """Label probabilities at each word's first sub-token in each window (NaN rows for words without one)."""
        width = max(len(window.input_ids) for window in batch)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([w.input_ids + [pad] * (width - len(w.input_ids)) for w in batch])
        mask = torch.tensor([[1] * len(w.input_ids) + [0] * (width - len(w.input_ids)) for w in batch])
        device = self.model.device  # transformers' property; the ONNX model's is the CPU
        inputs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        if self.model.config._attn_implementation == UNPADDED:  # on real tokens only, packed on the host
            inputs["packing"] = Packing.of_lengths([len(w.input_ids) for w in batch], width).to(device)
        logits = self.model(**inputs).logits
        probabilities = logits.float().softmax(dim=-1).cpu().numpy()
        out = []
        for row, window in enumerate(batch):
            word_rows = np.full((len(window.firsts), probabilities.shape[-1]), np.nan, dtype=np.float32)
            kept = [i for i, first in enumerate(window.firsts) if first is not None]  # invisible words keep NaN rows
            word_rows[kept] = probabilities[row, [window.firsts[i] for i in kept]]
            out.append(word_rows)
        return out

    def tag(self, texts: list[str], progress: tqdm | None = None) -> list[list[dict]]:
        """Entities of each text: {"type", "start", "end", "text", "score"}, offsets into the original string."""
        spans = [split_words(text) for text in texts]
        words = [[text[s:e] for s, e in doc] for text, doc in zip(texts, spans)]
        with_words = [i for i, doc in enumerate(words) if doc]
        pieces = dict(zip(with_words, self.word_pieces([words[i] for i in with_words])))
        windows = {i: self.windowing.windows(pieces[i]) for i in with_words}
        jobs = [(i, window) for i in with_words for window in windows[i]]
        jobs.sort(key=lambda job: len(job[1].input_ids))  # similar lengths share a batch: little padding
        remaining = {i: len(windows[i]) for i in with_words}
        if progress is not None:
            progress.update(len(texts) - len(with_words))
        rows = {i: np.full((len(words[i]), len(self.model.config.id2label)), np.nan, np.float32) for i in with_words}
        for batch in self.batches(jobs):
            for (doc, window), probabilities in zip(batch, self.word_probabilities([job[1] for job in batch])):
                for offset, central in enumerate(window.central):  # each word from the window it sits most central
                    if central:
                        rows[doc][window.start + offset] = probabilities[offset]
                remaining[doc] -= 1
                if progress is not None and remaining[doc] == 0:
                    progress.update(1)
        results = [[] for _ in texts]
        for doc in with_words:
            results[doc] = self.entities(texts[doc], spans[doc], rows[doc])
        return results

    def batches(self, jobs: list[tuple[int, Window]]) -> Iterator[list[tuple[int, Window]]]:
        """Consecutive runs of the length-sorted jobs, each at most batch_size windows and max_batch_tokens padded
        tokens (a run's newest window is its longest)."""
        batch: list[tuple[int, Window]] = []
        for job in jobs:
            width = len(job[1].input_ids)
            if batch and (len(batch) == self.batch_size or (len(batch) + 1) * width > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(job)
        if batch:
            yield batch

    def entities(self, text: str, spans: list[tuple[int, int]], probabilities: np.ndarray) -> list[dict]:
        """Entities from per-word probabilities; score: the mean probability of its words' tags.

        Words without sub-tokens (a zero-width space standing alone) are invisible to the model: entities are
        grouped over the words it sees, so such a word inside an entity joins it, and one at its edge stays out.
        """
        labels = [self.model.config.id2label[i] for i in range(len(self.model.config.id2label))]
        seen = np.flatnonzero(~np.isnan(probabilities[:, 0]))  # the words with a sub-token, in order
        with np.errstate(divide="ignore"):  # a probability of 0 is a log-probability of -inf: never chosen
            best = decode(np.log(probabilities[seen]), labels, self.decoding)
        entities = []
        for kind, first, last in extract_entities([labels[int(i)] for i in best]):
            start, end = spans[seen[first]][0], spans[seen[last - 1]][1]
            score = float(np.mean([probabilities[seen[w], best[w]] for w in range(first, last)]))
            entities.append({"type": kind, "start": start, "end": end, "text": text[start:end], "score": score})
        return entities
