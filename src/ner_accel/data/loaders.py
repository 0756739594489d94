"""A training run's loaders: its data tokenized once (main process first, cached), batched by length, global."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..inference.windows import Windowing
from ..modeling.loading import sequence_limit
from ..options.train_config import TrainConfig
from .batching import SCORING_INPUTS, make_loader, pad_multiple
from .corpus import Corpus
from .encoding import encode_dataset, encode_for_scoring


@dataclass
class Loaders:
    """What a training run reads: its batches, and the sub-token ids its training data uses."""

    train: DataLoader
    validation: dict[str, DataLoader]  # evaluation set name -> loader of its scoring rows (every word, in windows)
    validation_gold: dict[str, list[list[str]]]  # evaluation set name -> every word's tag, per sentence
    train_token_ids: np.ndarray  # sorted, distinct: the word-embedding rows training looks up


def build_loaders(config: TrainConfig, accelerator: Accelerator, tokenizer, corpus: Corpus, pack: bool) -> Loaders:
    """Tokenize once (main process first; the others read its cache) and batch: the train and validation loaders.
    pack: batches carry their packing (the model runs on real tokens only)."""
    max_length = sequence_limit(tokenizer, config.max_length)
    with accelerator.main_process_first():
        train_rows = encode_dataset(
            corpus.train, tokenizer, corpus.labels, max_length, config.label_all_tokens, "train"
        )
        # Validation scores every word (by its first sub-token, whatever the training labels, so F1 stays
        # comparable), long sentences through the windows predict uses: --max-length cuts training only.
        windowing = Windowing.of(tokenizer, max_length)
        eval_rows = {
            name: encode_for_scoring(words, tokenizer, corpus.labels, windowing, f"{name}/validation")
            for name, words in corpus.validation.items()
        }
    world = accelerator.num_processes
    loader_options = dict(
        tokenizer=tokenizer,
        seed=config.seed,
        pad_to_multiple_of=pad_multiple(accelerator.device, accelerator.mixed_precision),
        num_workers=config.dataloader_num_workers,
        pack=pack,
    )
    train_loader = make_loader(
        train_rows,
        batch_size=config.per_device_train_batch_size * world,
        train=True,
        group_by_length=config.group_by_length,
        num_processes=world,
        accumulation=config.gradient_accumulation_steps,
        **loader_options,
    )
    eval_loaders = {
        name: make_loader(
            rows, batch_size=config.per_device_eval_batch_size * world, train=False, columns=SCORING_INPUTS,
            **loader_options,
        )
        for name, rows in eval_rows.items()
    }  # fmt: skip
    gold = {name: list(words["tags"]) for name, words in corpus.validation.items()}
    token_ids = np.unique(train_rows.data.column("input_ids").combine_chunks().flatten().to_numpy())
    return Loaders(train_loader, eval_loaders, gold, token_ids)
