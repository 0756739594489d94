"""Scoring: predictions back to words, seqeval metrics, the book's error analysis."""
