"""Real (non-padding) and padded tokens of training batches: the one count behind every tokens/s and padding
efficiency the benchmarks report, whether read from the batches as they are collated or from a sampler's batches."""

from __future__ import annotations

import numpy as np


class TokenCount:
    """Real and padded tokens summed over batches; device tensors add up without a host sync until `read`."""

    def __init__(self) -> None:
        self.real, self.padded = 0, 0

    def add(self, attention_mask) -> None:
        """One padded batch: the ones of its attention mask are its real tokens, its size the padded ones."""
        self.real += attention_mask.sum()
        self.padded += attention_mask.numel()

    def watch(self, model):
        """Count the batch of every training-mode forward of `model` (a forward pre-hook); returns the hook's handle."""

        def count(module, args, kwargs) -> None:
            mask = kwargs.get("attention_mask")
            if mask is None and len(args) > 1:
                mask = args[1]
            if module.training and mask is not None:
                self.add(mask)

        return model.register_forward_pre_hook(count, with_kwargs=True)

    @classmethod
    def of_batches(cls, lengths, batches, pad_to_multiple_of: int | None = None) -> TokenCount:
        """The tokens of index batches over rows of these lengths, padded as the collator pads them: to the longest
        row, rounded up to the multiple. An index past the end (a filler row) repeats a real row, as in batching.py."""
        lengths, multiple, count = np.asarray(lengths), pad_to_multiple_of or 1, cls()
        for batch in batches:
            rows = lengths[np.asarray(batch) % len(lengths)]
            count.real += int(rows.sum())
            count.padded += -(-int(rows.max()) // multiple) * multiple * len(rows)
        return count

    def read(self) -> tuple[int, int]:
        """(real, padded) as integers (a host sync when they are device tensors)."""
        return int(self.real), int(self.padded)
