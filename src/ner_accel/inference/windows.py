"""Overlapping windows over a text's sub-tokens, and the window each word takes its tag from: the one code path
that both `predict` (raw text) and evaluation (gold sentences of any length) tag through."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from ..errors import UsageError


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


@dataclass(frozen=True)
class Window:
    """One model input over words [start, end) of a text."""

    start: int
    input_ids: list[int]  # the special tokens around the words' sub-tokens
    firsts: list[int | None]  # per word of the window: the position of its first sub-token (None: it has none)
    central: list[bool]  # per word of the window: whether the word takes its tag from this window


@dataclass(frozen=True)
class Windowing:
    """How a tokenizer's texts are cut into model inputs: the special tokens around each, the room for words."""

    prefix: list[int]  # e.g. [CLS] or <s>
    suffix: list[int]  # e.g. [SEP] or </s>
    budget: int  # sub-tokens of words per window
    overlap: int  # sub-tokens repeated between neighbouring windows

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, max_length: int, overlap: int | None = None) -> Windowing:
        """Windows of `max_length` sub-tokens; overlap: a quarter of the room for words by default."""
        sample = tokenizer(["a"], is_split_into_words=True)  # the special tokens, read off a one-word encoding
        words = [i for i, word in enumerate(sample.word_ids()) if word is not None]
        prefix, suffix = sample["input_ids"][: words[0]], sample["input_ids"][words[-1] + 1 :]
        budget = max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise UsageError(f"--max-length {max_length} leaves no room for words next to the special tokens")
        overlap = budget // 4 if overlap is None else overlap
        if not 0 <= overlap < budget:
            raise UsageError(f"--overlap must lie in [0, {budget}) sub-tokens, got {overlap}")
        return cls(prefix, suffix, budget, overlap)

    def windows(self, pieces: list[list[int]]) -> list[Window]:
        """The windows over one text's words, given each word's sub-token ids (word_pieces)."""
        plan = plan_windows([len(p) for p in pieces], self.budget, self.overlap)
        chosen = central_windows(plan, len(pieces))
        windows = []
        for index, (start, end) in enumerate(plan):
            flat, firsts = [], []
            for word in range(start, end):
                firsts.append(len(self.prefix) + len(flat) if pieces[word] else None)
                flat += pieces[word]
            central = [chosen[word] == index for word in range(start, end)]
            windows.append(Window(start, self.prefix + flat[: self.budget] + self.suffix, firsts, central))
        return windows


def word_pieces(tokenizer: PreTrainedTokenizerBase, texts: list[list[str]]) -> list[list[list[int]]]:
    """Sub-token ids of every word of each text, tokenized as in training (is_split_into_words); a word the
    tokenizer drops (a lone zero-width space) has none."""
    if not texts:
        return []
    encoded = tokenizer(texts, is_split_into_words=True, add_special_tokens=False, verbose=False)
    pieces = []
    for row, words in enumerate(texts):
        per_word: list[list[int]] = [[] for _ in words]
        for token, word in zip(encoded["input_ids"][row], encoded.word_ids(row)):
            per_word[word].append(token)
        pieces.append(per_word)
    return pieces
