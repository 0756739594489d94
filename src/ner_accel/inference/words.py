"""Split raw text into words as PAN-X does, with the character span of each word.

PAN-X splits punctuation from words; BERT's basic tokenizer draws the same lines, which is what keeps offsets
identical to the token-classification pipeline. Hyphens, apostrophes and periods between letters or digits stay
inside a word (Baden-Württemberg, d'Italie, U.S, 6–3) and a final 's is a word (Merkel 's), as in PAN-X.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache


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


def inside_word(text: str, i: int) -> bool:
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
        inside = inside_word(text, i)
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
