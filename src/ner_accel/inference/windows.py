"""Overlapping windows over a long text's sub-tokens, and the window each word takes its tag from."""

from __future__ import annotations


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
