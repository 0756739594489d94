"""Run the encoder on real tokens only: every layer but attention sees one packed row with no padding.

Length-grouped batches of PAN-X are still 10-15 % padding, and every linear layer, layer norm, GELU and dropout of
a padded forward spends that share on positions whose outputs are thrown away. Packing the real tokens of a batch
into one row (position ids restarting per sentence) removes that work. Attention is the one place where sentences
must stay apart, so the attention function below re-pads queries, keys and values per sentence for
`scaled_dot_product_attention` and packs its output again. The result is the padded model's, token for token.

The attention function is registered with transformers under `UNPADDED`; a model loaded with
`attn_implementation=UNPADDED` runs packed when its forward passes `packing=`, and like "sdpa" otherwise.
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
class Packing:
    """Where the real tokens of a padded (batch, length) layout sit: the packed row holds them in order."""

    real: torch.Tensor  # (batch, length) bool: True at real tokens
    positions: torch.Tensor  # (real tokens,): flat position (row * length + column) of each real token

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        real = attention_mask.bool()
        return cls(real, real.flatten().nonzero().squeeze(1))

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (1, real tokens, ...), sentence after sentence."""
        return padded.flatten(0, 1).index_select(0, self.positions).unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, real tokens, ...) -> (batch, length, ...), zeros at pads."""
        return ScatterRows.apply(packed[0], self.positions, self.real.numel()).unflatten(0, self.real.shape)


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packing=None, **kwargs):
    """Attention within each sentence of a packed row; "sdpa" when the forward is not packed."""
    if packing is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )

    def per_sentence(packed: torch.Tensor) -> torch.Tensor:  # (1, heads, tokens, dim) -> (batch, heads, length, dim)
        return packing.unpack(packed.transpose(1, 2)).transpose(1, 2)

    output = F.scaled_dot_product_attention(
        per_sentence(query),
        per_sentence(key),
        per_sentence(value),
        attn_mask=packing.real[:, None, None, :],
        dropout_p=dropout,
        scale=scaling,
    )
    # (batch, heads, length, dim) -> (1, tokens, heads, dim), the layout attention functions return.
    return packing.pack(output.transpose(1, 2)), None


AttentionInterface.register(UNPADDED, unpadded_attention)
AttentionMaskInterface.register(UNPADDED, sdpa_mask)
