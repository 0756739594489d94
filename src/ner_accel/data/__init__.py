"""Corpora in, batches out: file readers and tag schemes, the Hub's PAN-X, tokenization, length-grouped batches."""
