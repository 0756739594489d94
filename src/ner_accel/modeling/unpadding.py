"""Run the encoder on real tokens only: every layer but attention sees one packed row with no padding.

Length-grouped batches of PAN-X are still 10-15 % padding, and every linear layer, layer norm, GELU and dropout of
a padded forward spends that share on positions whose outputs are thrown away. Packing the real tokens of a batch
into one row (position ids restarting per sentence) removes that work. Attention is the one place where sentences
must stay apart, so the attention function below re-pads queries, keys and values per sentence for
`scaled_dot_product_attention` (sentences of similar length together) and packs its output again. The result is
the padded model's, token for token.

`register_unpadded_attention()` registers the attention function with transformers under `UNPADDED` (model.py
calls it before loading); a model loaded with `attn_implementation=UNPADDED` runs packed when its forward passes
`packing=`, and like "sdpa" otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

UNPADDED = "ner_accel_unpadded"


class ScatterRows(torch.autograd.Function):
    """rows (n, ...) copied into rows `positions` of a zero (size, ...) tensor; positions are distinct.

    The backward is a plain row gather. (Autograd's own backward of advanced indexing is an accumulating
    index_put, which runs serially on CPU: 5 % of a MiniLM training step, for no use, as no position repeats.)
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, positions: torch.Tensor, size: int) -> torch.Tensor:
        ctx.save_for_backward(positions)
        return rows.new_zeros(size, *rows.shape[1:]).index_copy_(0, positions, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positions,) = ctx.saved_tensors
        return grad.index_select(0, positions), None, None


@dataclass(frozen=True)
class Bucket:
    """Sentences of similar length, attended together, padded to their own longest rather than the batch's."""

    tokens: torch.Tensor  # (n,): positions in the packed row of the bucket's tokens, sentence after sentence
    slots: torch.Tensor  # (n,): flat position (sentence * width + column) of each in the bucket's padded layout
    real: torch.Tensor  # (sentences, width) bool: True at real tokens

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """(tokens, heads, dim) of the whole packed row -> (sentences, heads, width, dim) of this bucket."""
        rows = ScatterRows.apply(packed.index_select(0, self.tokens), self.slots, self.real.numel())
        return rows.unflatten(0, self.real.shape).transpose(1, 2)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(sentences, heads, width, dim) -> (this bucket's tokens, heads, dim)."""
        return padded.transpose(1, 2).flatten(0, 1).index_select(0, self.slots)


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a padded (batch, length) layout sit: the packed row holds them in order."""

    real: torch.Tensor  # (batch, length) bool: True at real tokens
    positions: torch.Tensor  # (real tokens,): flat position (row * length + column) of each real token
    buckets: tuple[Bucket, ...]  # the batch's sentences by length class, for attention
    bucket_tokens: torch.Tensor  # the buckets' tokens one after another: where attention outputs go back

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        real = attention_mask.bool()
        buckets = length_buckets(real.sum(dim=1).tolist(), real.device)
        tokens = torch.cat([bucket.tokens for bucket in buckets])
        return cls(real, real.flatten().nonzero().squeeze(1), buckets, tokens)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (1, real tokens, ...), sentence after sentence."""
        return padded.flatten(0, 1).index_select(0, self.positions).unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, real tokens, ...) -> (batch, length, ...), zeros at pads."""
        return ScatterRows.apply(packed[0], self.positions, self.real.numel()).unflatten(0, self.real.shape)


def length_buckets(lengths: list[int], device: torch.device) -> tuple[Bucket, ...]:
    """Sentences grouped by length class (1, 2, 3-4, 5-8, ..., powers of two).

    Attention pads each group only to its own longest sentence: one 512-sub-token sentence among short ones
    would otherwise pad all 24 to 512 and hold 24 x heads x 512 x 512 attention probabilities per layer for the
    backward pass (6.9 GiB for one MiniLM step on PAN-X.en, against 1.2 GiB for the next widest batch).
    """
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    classes: dict[int, list[int]] = {}
    for row, length in enumerate(lengths):
        if length:
            classes.setdefault((length - 1).bit_length(), []).append(row)
    buckets = []
    for rows in classes.values():
        width = max(lengths[row] for row in rows)
        tokens = [token for row in rows for token in range(offsets[row], offsets[row + 1])]
        slots = [i * width + column for i, row in enumerate(rows) for column in range(lengths[row])]
        counts = torch.tensor([lengths[row] for row in rows], device=device)
        real = torch.arange(width, device=device)[None, :] < counts[:, None]
        buckets.append(Bucket(torch.tensor(tokens, device=device), torch.tensor(slots, device=device), real))
    return tuple(buckets)


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packing=None, **kwargs):
    """Attention within each sentence of a packed row; "sdpa" when the forward is not packed."""
    if packing is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    # (1, heads, tokens, dim) -> (tokens, heads, dim): one row per token, as the buckets index them.
    query, key, value = (x[0].transpose(0, 1) for x in (query, key, value))
    outputs = [
        bucket.unpad(
            F.scaled_dot_product_attention(
                bucket.pad(query),
                bucket.pad(key),
                bucket.pad(value),
                attn_mask=bucket.real[:, None, None, :],
                dropout_p=dropout,
                scale=scaling,
            )
        )
        for bucket in packing.buckets
    ]
    output = ScatterRows.apply(torch.cat(outputs), packing.bucket_tokens, query.shape[0])
    return output.unsqueeze(0), None  # (1, tokens, heads, dim), the layout attention functions return


def register_unpadded_attention() -> None:
    """Make `attn_implementation=UNPADDED` known to transformers (again is harmless)."""
    AttentionInterface.register(UNPADDED, unpadded_attention)
    AttentionMaskInterface.register(UNPADDED, sdpa_mask)
