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


@dataclass(frozen=True)
class Packing:
    """Where each real token of a padded (batch, length) layout sits in the packed row of all real tokens."""

    real: torch.Tensor  # (batch, length) bool: True at real tokens
    index: torch.Tensor  # (batch, length): position in the packed row (pads point at 0, and are masked)

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing:
        real = attention_mask.bool()
        index = (real.flatten().cumsum(0) - 1).clamp(min=0).view(real.shape)
        return cls(real, index)

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (1, real tokens, ...), sentence after sentence."""
        return padded[self.real].unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, real tokens, ...) -> (batch, length, ...), zeros at pads."""
        padded = packed.new_zeros(*self.real.shape, *packed.shape[2:])
        padded[self.real] = packed[0]
        return padded


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packing=None, **kwargs):
    """Attention within each sentence of a packed row; "sdpa" when the forward is not packed."""
    if packing is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )

    def per_sentence(packed: torch.Tensor) -> torch.Tensor:  # (1, heads, tokens, dim) -> (batch, heads, length, dim)
        return packed[0][:, packing.index].transpose(0, 1)

    output = F.scaled_dot_product_attention(
        per_sentence(query),
        per_sentence(key),
        per_sentence(value),
        attn_mask=packing.real[:, None, None, :],
        dropout_p=dropout,
        scale=scaling,
    )
    # (batch, heads, length, dim) -> (1, tokens, heads, dim), the layout attention functions return.
    return output.transpose(1, 2)[packing.real].unsqueeze(0), None


AttentionInterface.register(UNPADDED, unpadded_attention)
AttentionMaskInterface.register(UNPADDED, sdpa_mask)
