"""Run the encoder on real tokens only: every layer but attention sees one packed row with no padding.

Length-grouped batches of PAN-X are still 10-15 % padding, and every linear layer, layer norm, GELU and dropout of
a padded forward spends that share on positions whose outputs are thrown away. Packing the real tokens of a batch
into one row (position ids restarting per sentence) removes that work. Attention is the one place where sentences
must stay apart, so the attention function below re-pads queries, keys and values per sentence for
`scaled_dot_product_attention` (sentences of similar length together) and packs its output again. The result is
the padded model's, token for token.

Where the real tokens sit is a fact of the batch, known on the host when it is collated: `Packing.of_lengths`
computes it there (data/batching.py's collator puts it in the batch as `packing`), so the forward never reads a
device value back (no `.tolist()`, no `nonzero`) and the same batch can feed a varlen attention kernel
(`cu_seqlens`, `max_seqlen`). `register_unpadded_attention()` registers the attention function with transformers
under `UNPADDED` (model loading calls it); a model loaded with `attn_implementation=UNPADDED` runs packed when its
forward gets `packing=`, and padded, like "sdpa", otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

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


class OnDevice:
    """A frozen dataclass of tensors that moves and pins as one batch value (accelerate and the DataLoader call
    `.to` and `.pin_memory` on it); its other fields are host values and stay as they are."""

    def _map(self, move):
        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False):
        def move(value):
            if isinstance(value, torch.Tensor | OnDevice):
                return value.to(device, non_blocking=non_blocking)
            if isinstance(value, tuple):
                return tuple(move(item) for item in value)
            return value

        return self._map(move)

    def pin_memory(self):
        def pin(value):
            if isinstance(value, torch.Tensor | OnDevice):
                return value.pin_memory()
            return tuple(pin(item) for item in value) if isinstance(value, tuple) else value

        return self._map(pin)


@dataclass(frozen=True)
class Bucket(OnDevice):
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
class Packing(OnDevice):
    """Where the real tokens of a padded (batch, width) layout sit: the packed row holds them in order."""

    shape: tuple[int, int]  # (batch, width) of the padded layout
    positions: torch.Tensor  # (real tokens,): flat position (row * width + column) of each real token
    buckets: tuple[Bucket, ...]  # the batch's sentences by length class, for attention
    bucket_tokens: torch.Tensor  # the buckets' tokens one after another: where attention outputs go back
    cu_seqlens: torch.Tensor  # (batch + 1,) int32: where each sentence starts in the packed row, for varlen kernels
    max_seqlen: int  # the longest sentence

    @classmethod
    def of_lengths(cls, lengths: list[int], width: int) -> Packing:
        """The packing of sentences of `lengths` real tokens each, left-aligned in rows of `width` (on the host)."""
        buckets = length_buckets(lengths)
        positions = [row * width + column for row, length in enumerate(lengths) for column in range(length)]
        offsets = [0]
        for length in lengths:
            offsets.append(offsets[-1] + length)
        return cls(
            shape=(len(lengths), width),
            positions=torch.tensor(positions, dtype=torch.long),
            buckets=buckets,
            bucket_tokens=torch.cat([bucket.tokens for bucket in buckets]),
            cu_seqlens=torch.tensor(offsets, dtype=torch.int32),
            max_seqlen=max(lengths),
        )

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, width, ...) -> (1, real tokens, ...), sentence after sentence."""
        return padded.flatten(0, 1).index_select(0, self.positions).unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, real tokens, ...) -> (batch, width, ...), zeros at pads."""
        return ScatterRows.apply(packed[0], self.positions, self.size).unflatten(0, self.shape)


def length_buckets(lengths: list[int]) -> tuple[Bucket, ...]:
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
        counts = torch.tensor([lengths[row] for row in rows])
        real = torch.arange(width)[None, :] < counts[:, None]
        buckets.append(Bucket(torch.tensor(tokens), torch.tensor(slots), real))
    return tuple(buckets)


def unpadded_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, packing=None, **kwargs):
    """Attention within each sentence of a packed row; "sdpa" when the forward runs padded."""
    if packing is None:
        if attention_mask is None:  # padded forwards always have a mask here (padded_mask): this one was packed
            raise RuntimeError(
                f"{UNPADDED} attention got a packed row without its packing (the `packing` keyword did not reach "
                "the attention function): attending across the whole row would mix sentences. This transformers "
                "version may not pass attention keywords through its layers; use --attention sdpa"
            )
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


def padded_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """sdpa's mask for a padded forward, always materialised: then attention tells a padded forward from a packed
    one (which passes no mask), and the host never checks whether every position is real (`mask.all()`, a sync)."""
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **{**kwargs, "allow_is_bidirectional_skip": False})


def register_unpadded_attention() -> None:
    """Make `attn_implementation=UNPADDED` known to transformers (again is harmless)."""
    AttentionInterface.register(UNPADDED, unpadded_attention)
    AttentionMaskInterface.register(UNPADDED, padded_mask)
