"""Batches of similar length (little padding), reproducible by seed and identical for any number of processes."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForTokenClassification

from ..modeling.unpadding import Packer
from .alignment import IGNORE

MODEL_INPUTS = ["input_ids", "attention_mask", "labels"]
# Scoring rows also say which word of which sentence each labelled position is (data/encoding.encode_for_scoring).
SCORING_INPUTS = [*MODEL_INPUTS, "word_index", "sentence"]
# Batches per sorted group. PAN-X.en, 8,000 sentences, batch 24 (MiniLM tokenizer): real/padded tokens 0.379 for
# random batches, 0.860 for groups of 64, 0.881 for 128, 0.901 for one global sort (BENCHMARKS.md).
# 128 keeps most of the gain of a global sort while batches still mix sentences from across a 3,072-sentence pool.
GROUP_BATCHES = 128


class LengthGroupedBatches:
    """Global batches: random groups of `group_batches` batches, sorted by length inside each group, then the
    batches shuffled. group_batches=1 gives plain random batches; shuffle=False gives longest-first batches.

    Every process draws the same global batches from (seed, epoch); Accelerate (split_batches=True) hands each
    process its slice, so N processes see exactly the batches one process sees. With `fill_last`, the short last
    batch is topped up with filler rows (index >= len(data), labels ignored) so no process repeats real data.
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        seed: int = 0,
        group_batches: int = GROUP_BATCHES,
        shuffle: bool = True,
        fill_last: bool = False,
        accumulation: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.accumulation = accumulation  # micro-batches per optimizer step: their sentences are drawn together
        self.batch_size = batch_size  # read by accelerate's BatchSamplerShard
        self.drop_last = False
        self.seed, self.group_batches, self.shuffle, self.fill_last = seed, group_batches, shuffle, fill_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full_steps, rest = divmod(len(self.lengths), self.batch_size * self.accumulation)
        return full_steps * self.accumulation + -(-rest // self.batch_size)

    def __iter__(self):
        # One optimizer step's sentences (batch_size x accumulation) are drawn, grouped and shuffled as one batch,
        # then cut into micro-batches: K accumulation steps see exactly the sentences of one K-times-larger batch.
        step = self.batch_size * self.accumulation
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        group = step * self.group_batches if self.shuffle else len(order)
        batches = []
        for start in range(0, len(order), group):
            chunk = order[start : start + group]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + step] for i in range(0, len(chunk), step)]
        last = batches.pop() if len(batches[-1]) < step else None
        if self.shuffle:
            rng.shuffle(batches)
        if last is not None:  # the short step goes last, where accelerate's sharding expects it
            batches.append(last)
        micro = [batch[i : i + self.batch_size] for batch in batches for i in range(0, len(batch), self.batch_size)]
        if self.fill_last and len(micro[-1]) < self.batch_size:
            short = micro[-1]
            micro[-1] = np.concatenate([short, len(self.lengths) + np.resize(short, self.batch_size - len(short))])
        return iter([b.tolist() for b in micro])


class WithFillers(torch.utils.data.Dataset):
    """Rows of an encoded dataset; an index past the end returns a real row whose labels are all ignored."""

    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        size = len(self.data)
        rows = self.data.__getitems__([i % size for i in indices])
        for index, row in zip(indices, rows):
            if index >= size:
                row["labels"] = [IGNORE] * len(row["labels"])
        return rows


class Collator:
    """Pads a batch's rows (transformers' token-classification collator: labels padded with -100) and, for a model
    that runs packed, adds where their real tokens sit (`packing`), computed here on the host so the forward never
    reads it back from the device. pack: True (Packer()) or a Packer (token-count buckets: unpadding.py)."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None, pack: bool | Packer | None = False) -> None:
        self.pad = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.pack = Packer() if pack is True else pack or None

    def __call__(self, rows: list[dict]) -> dict:
        word_index = [row.pop("word_index") for row in rows] if "word_index" in rows[0] else None
        sentence = [row.pop("sentence") for row in rows] if "sentence" in rows[0] else None
        batch = self.pad(rows)
        lengths = [len(row["input_ids"]) for row in rows]
        if self.pack and self.pack.token_buckets and sum(lengths) == batch["input_ids"].numel():
            for name, value in batch.items():  # one pad column: the position the filler tokens copy
                pad = {"input_ids": self.pad.tokenizer.pad_token_id or 0, "labels": IGNORE}.get(name, 0)
                batch[name] = torch.nn.functional.pad(value, (0, 1), value=pad)
        if word_index is not None:  # padded like the labels, which it sits beside
            width = batch["input_ids"].shape[1]
            batch["word_index"] = torch.tensor([w + [IGNORE] * (width - len(w)) for w in word_index])
        if sentence is not None:
            batch["sentence"] = torch.tensor(sentence)
        if self.pack:
            batch["packing"] = self.pack(lengths, batch["input_ids"].shape[1])
        return batch


def padding_efficiency(lengths, batches) -> float:
    """Real tokens over padded tokens for a sequence of batches (index lists)."""
    lengths = np.asarray(lengths)
    batches = [np.asarray(b) % len(lengths) for b in batches]  # filler rows (index >= len) repeat real rows
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return real / padded


def pad_multiple(device: torch.device, mixed_precision: str) -> int | None:
    """Pad batches to a multiple of 8 for tensor cores under mixed precision on CUDA; on a CPU a multiple only adds
    padding (PAN-X batches: 0.88 -> 0.71 real tokens)."""
    return 8 if device.type == "cuda" and mixed_precision != "no" else None


def make_loader(
    data,
    tokenizer,
    batch_size: int,
    seed: int,
    train: bool,
    group_by_length: bool = True,
    num_processes: int = 1,
    pad_to_multiple_of: int | None = None,
    num_workers: int = 0,
    accumulation: int = 1,
    pack: bool | Packer | None = False,
    columns: list[str] = MODEL_INPUTS,
) -> DataLoader:
    """A DataLoader over encoded rows with global batches of `batch_size` (all processes together); `pack`: the
    batches carry their packing (a Packer: how), for a model with the UNPADDED attention."""
    sampler = LengthGroupedBatches(
        data["length"],
        batch_size,
        seed,
        group_batches=GROUP_BATCHES if group_by_length else 1,
        shuffle=train,
        fill_last=train and num_processes > 1,
        accumulation=accumulation if train else 1,
    )
    rows = data.select_columns(columns)
    collate = Collator(tokenizer, pad_to_multiple_of, pack)
    return DataLoader(
        WithFillers(rows) if train else rows,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        # Its own generator: starting an epoch must not draw from the global RNG that dropout uses,
        # or a resumed run (which starts its loaders afresh) would see different dropout masks.
        generator=torch.Generator().manual_seed(seed),
    )
