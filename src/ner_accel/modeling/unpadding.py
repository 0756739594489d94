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

The packed row has two kernels for its attention: the length buckets above (every device, attention dropout
included), and torch's `varlen_attn` (FlashAttention-2 in the CUDA wheel: no padding at all, the collator's
`cu_seqlens` and `max_seqlen` as they are), which a model takes with `use_packed_kernel(model, VARLEN)` where it
runs: CUDA, bf16 or fp16, and no attention dropout (varlen_attn has none), so a training forward of XLM-R (attention
dropout 0.1) still attends by buckets and its evaluation by varlen. `Packer(token_buckets=True)` tops the packed row
up to one of a few sizes with filler tokens, so a compiled or CUDA-graphed layer sees a handful of shapes.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

try:  # torch 2.10+: FlashAttention-2's varlen kernels, CUDA only
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None
# Its first releases took no `scale` (always 1 / sqrt(head size), which BERT's and XLM-R's attention use).
VARLEN_SCALE = varlen_attn is not None and "scale" in inspect.signature(varlen_attn).parameters

UNPADDED = "ner_accel_unpadded"
VARLEN = "ner_accel_varlen"  # --attention: UNPADDED's packed row, attended by varlen_attn where it runs
BUCKETS = "buckets"  # the packed attention's own kernel: sdpa per length bucket
# Device type -> the dtypes varlen_attn's kernels take (FlashAttention-2: half precision only).
VARLEN_KERNELS = {"cuda": (torch.float16, torch.bfloat16)}
# Token-count buckets: 4 sizes per octave from 64 tokens (64, 80, 96, 112, 128, 160, ...), so at most a fifth of a
# packed row is filler; filler tokens form sequences of at most FILLER_SEQUENCE tokens (attention cost stays small).
FIRST_TOKEN_BUCKET, FILLER_SEQUENCE = 64, 64


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
    """Where the real tokens of a padded (batch, width) layout sit: the packed row holds them in order, then any
    filler tokens (token-count buckets: copies of one pad position, labels ignored, their own sequences)."""

    shape: tuple[int, int]  # (batch, width) of the padded layout
    positions: torch.Tensor  # (tokens,): flat position (row * width + column) of each token of the packed row
    buckets: tuple[Bucket, ...]  # the row's sequences by length class, for attention
    bucket_tokens: torch.Tensor  # the buckets' tokens one after another: where attention outputs go back
    cu_seqlens: torch.Tensor  # (sequences + 1,) int32: where each sequence starts in the packed row, for varlen
    max_seqlen: int  # the longest sequence (rounded up to a power of two with token buckets: fewer distinct values)
    real_tokens: int  # the first real_tokens of the packed row are the batch's; the rest are filler

    @classmethod
    def of_lengths(cls, lengths: list[int], width: int, token_buckets: bool = False) -> Packing:
        """The packing of sentences of `lengths` real tokens each, left-aligned in rows of `width` (on the host).
        token_buckets: fill the row up to token_bucket(real tokens); the layout must have a pad position."""
        positions = [row * width + column for row, length in enumerate(lengths) for column in range(length)]
        real, sequences, longest = len(positions), list(lengths), max(lengths)
        if token_buckets:
            size = token_bucket(real)
            pad = next((row * width + length for row, length in enumerate(lengths) if length < width), None)
            if pad is None:
                raise ValueError(f"token buckets need a pad position to copy; rows {lengths} fill width {width}")
            positions += [pad] * (size - real)
            sequences += filler_sequences(size - real, size)
            longest = 1 << (max(sequences) - 1).bit_length()
        buckets = length_buckets(sequences)
        return cls(
            shape=(len(lengths), width),
            positions=torch.tensor(positions, dtype=torch.long),
            buckets=buckets,
            bucket_tokens=torch.cat([bucket.tokens for bucket in buckets]),
            cu_seqlens=torch.tensor(cumulative(sequences), dtype=torch.int32),
            max_seqlen=longest,
            real_tokens=real,
        )

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """(batch, width, ...) -> (1, tokens, ...), sentence after sentence, then the filler."""
        return padded.flatten(0, 1).index_select(0, self.positions).unsqueeze(0)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, tokens, ...) -> (batch, width, ...), zeros at pads; the filler is dropped."""
        real = slice(0, self.real_tokens)
        return ScatterRows.apply(packed[0, real], self.positions[real], self.size).unflatten(0, self.shape)


@dataclass(frozen=True)
class Packer:
    """How a collator packs its batches (data/batching.py): `Packing.of_lengths`, with `token_buckets` the packed
    row topped up to one of a few sizes, so that a compiled or graph-captured layer sees few shapes (--compile)."""

    token_buckets: bool = False

    def __call__(self, lengths: list[int], width: int) -> Packing:
        return Packing.of_lengths(lengths, width, self.token_buckets)


def cumulative(lengths: list[int]) -> list[int]:
    """[0, l0, l0 + l1, ...]: where each sequence starts in the packed row, and its end."""
    offsets = [0]
    for length in lengths:
        offsets.append(offsets[-1] + length)
    return offsets


def token_bucket(tokens: int) -> int:
    """The smallest size of 64, 80, 96, 112, 128, 160, ... (4 a doubling) that holds `tokens`."""
    return next(size for size in token_bucket_sizes() if size >= tokens)


def token_bucket_sizes():
    octave = FIRST_TOKEN_BUCKET
    while True:
        yield from (octave * quarters // 4 for quarters in (4, 5, 6, 7))
        octave *= 2


def filler_sequences(tokens: int, size: int) -> list[int]:
    """`tokens` filler tokens as sequences of at most FILLER_SEQUENCE, padded with empty ones to a count fixed by
    the bucket `size` (so cu_seqlens has one shape per bucket and batch size)."""
    previous = max([0, *(s for s in itertools.takewhile(lambda s: s < size, token_bucket_sizes()))])
    count = max(1, -(-(size - previous) // FILLER_SEQUENCE))
    full, rest = divmod(tokens, FILLER_SEQUENCE)
    sequences = [FILLER_SEQUENCE] * full + ([rest] if rest else [])
    return sequences + [0] * (count - len(sequences))


def length_buckets(lengths: list[int]) -> tuple[Bucket, ...]:
    """Sentences grouped by length class (1, 2, 3-4, 5-8, ..., powers of two).

    Attention pads each group only to its own longest sentence: one 512-sub-token sentence among short ones
    would otherwise pad all 24 to 512 and hold 24 x heads x 512 x 512 attention probabilities per layer for the
    backward pass (6.9 GiB for one MiniLM step on PAN-X.en, against 1.2 GiB for the next widest batch).
    """
    offsets = cumulative(lengths)
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
    """Attention within each sequence of a packed row; "sdpa" when the forward runs padded."""
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
    # (1, heads, tokens, dim) -> (tokens, heads, dim): one row per token (a view: the projections' own layout).
    query, key, value = (x[0].transpose(0, 1) for x in (query, key, value))
    if getattr(module, "packed_kernel", BUCKETS) == VARLEN and varlen_runs(query, dropout, scaling):
        lengths = packing.cu_seqlens, packing.cu_seqlens, packing.max_seqlen, packing.max_seqlen
        output = varlen_attn(query, key, value, *lengths, **({"scale": scaling} if VARLEN_SCALE else {}))
    else:
        output = bucketed_attention(query, key, value, packing, scaling, dropout)
    return output.unsqueeze(0), None  # (1, tokens, heads, dim), the layout attention functions return


def varlen_runs(query: torch.Tensor, dropout: float, scaling: float | None = None) -> bool:
    """Whether torch's varlen_attn takes this call: a kernel for the device and dtype, no attention dropout, a head
    size FlashAttention-2 has (a multiple of 8, at most 256), and a scale it can apply."""
    kernel = varlen_attn is not None and query.dtype in VARLEN_KERNELS.get(query.device.type, ())
    head = query.shape[-1]
    scaled = VARLEN_SCALE or scaling is None or math.isclose(scaling, head**-0.5)
    return kernel and not dropout and head % 8 == 0 and head <= 256 and scaled


@torch.compiler.disable  # shapes vary with the batch's length classes: compiled layers call it as it is
def bucketed_attention(query, key, value, packing: Packing, scaling: float | None, dropout: float) -> torch.Tensor:
    """(tokens, heads, dim) each -> (tokens, heads, dim): sdpa per length bucket, each padded to its own longest."""
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
    return ScatterRows.apply(torch.cat(outputs), packing.bucket_tokens, query.shape[0])


def use_packed_kernel(model: torch.nn.Module, kernel: str) -> int:
    """Attend the packed row of `model` (UNPADDED attention) with `kernel`: VARLEN (where varlen_runs, else the
    buckets) or BUCKETS. Set on each self-attention module, which transformers hands to the attention function;
    returns how many there are."""
    modules = [m for m in model.modules() if hasattr(m, "attention_head_size") and hasattr(m, "scaling")]
    for module in modules:
        module.packed_kernel = kernel
    return len(modules)


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
