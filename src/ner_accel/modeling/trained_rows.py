"""Train only the word-embedding rows the training data uses; put the full matrix back for the saved model.

XLM-R's vocabulary has 250,002 pieces, so its word-embedding matrix is most of the model (192M of
xlm-roberta-base's 278M parameters, 96M of multilingual-e5-small's 118M), while a PAN-X training set uses a few
tens of thousands of rows. Trained densely, every step computes, clips and all-reduces a gradient for the whole
matrix and AdamW reads and writes it with two moments, and every checkpoint stores those moments. Here the rows the
training data looks up are one small trainable matrix and the rest stay fixed, on every device, process count and
precision alike (plain parameters: DDP and FSDP reduce, clip and shard them as any other). What changes against
dense AdamW: a row the training data never looks up keeps its pretrained value exactly, where dense AdamW would
shrink it by the weight decay each step (docs/design.md). This is the reduced training vocabulary of flair's
`transformer-smaller-training-vocab`, without rewriting the tokenizer: the saved model is the plain transformers
model with its full vocabulary, so it tags any language the encoder knows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TRAINED = "trained_rows"  # the state dict's name of the trainable rows, beside the matrix's "weight"
ROWS = "rows"  # and of their token ids, sorted


class EmbeddingWithTrainedRows(nn.Module):
    """nn.Embedding's lookup over a fixed matrix, except at `rows`, which come from a trainable copy of theirs."""

    def __init__(self, embedding: nn.Embedding, rows: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(embedding.weight.detach(), requires_grad=False)  # the full matrix, as loaded
        self.register_buffer(ROWS, rows.sort().values.to(self.weight.device))
        setattr(self, TRAINED, nn.Parameter(self.weight[self.rows].clone()))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Where each id sits among the sorted trained rows, if it is one: no host sync, no data-dependent shape.
        place = torch.searchsorted(self.rows, input_ids).clamp(max=len(self.rows) - 1)
        trained = self.rows[place] == input_ids
        return torch.where(
            trained.unsqueeze(-1), F.embedding(place, self.trained_rows), F.embedding(input_ids, self.weight)
        )


def train_only_used_rows(model: nn.Module, token_ids: np.ndarray) -> int:
    """Make only the rows of `token_ids` (the training data's, padding left out) trainable; return their number."""
    embedding = model.get_input_embeddings()
    pad = model.config.pad_token_id
    rows = torch.as_tensor(np.setdiff1d(token_ids, [] if pad is None else [pad]), dtype=torch.long)
    model.set_input_embeddings(EmbeddingWithTrainedRows(embedding, rows))
    return len(rows)


def with_full_embedding(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with the trained rows written into the full matrix: the plain transformers model's keys."""
    merged = dict(state_dict)
    for key in [k for k in state_dict if k.endswith(f".{TRAINED}")]:
        prefix = key[: -len(TRAINED)]
        rows = merged.pop(prefix + ROWS)
        weight = merged[prefix + "weight"]
        merged[prefix + "weight"] = weight.index_copy(0, rows.to(weight.device), merged.pop(key).to(weight.dtype))
    return merged
