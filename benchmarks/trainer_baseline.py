"""The seed notebook's recipe with transformers' Trainer: the baseline every benchmark sets ner_accel against.

One recipe for bench_train.py and multilingual.py (`seed_recipe`: the seed's tokenize_and_align_labels, whole
epochs, then the seed's compute_metrics on each validation set) and bench_gpu.py (`training_arguments` and
`seed_trainer` over rows it encodes itself, timed over a window of steps): the seed's TrainingArguments (learning
rate 5e-5, weight decay 0.01, linear schedule, evaluation and saving off while timed),
DataCollatorForTokenClassification, random batches or group_by_length.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from benchmarks.tokens import TokenCount

LEARNING_RATE, WEIGHT_DECAY = 5e-5, 0.01  # the seed's: TrainingArguments' default rate, its weight decay
SAMPLING = ("random", "group_by_length")  # Trainer's train_sampling_strategy: the seed's, and the best a user gets


def load_words(
    train_dirs: list[str],
    eval_dirs: list[str],
    train_samples: int | None,
    eval_samples: int | None,
    fractions: list[float] | None = None,
    seed: int = 42,
) -> tuple[list[dict], dict[str, list[dict]], list[str]]:
    """The training directories concatenated (the book's concatenate_datasets) through ner_accel's own load_corpus,
    so the per-language cut and seeded fractions are ner_accel's sentences and label order exactly; the validation
    split of each evaluation directory kept apart, keyed by folder name (the language)."""
    from ner_accel.data.corpus import CorpusOptions, load_corpus
    from ner_accel.data.readers import read_conll

    options = CorpusOptions(
        data_dir=train_dirs, max_train_samples=train_samples, language_fractions=fractions, seed=seed
    )
    corpus = load_corpus(options)
    train = [{"tokens": tokens, "tags": tags} for tokens, tags in zip(corpus.train["tokens"], corpus.train["tags"])]
    validation = {Path(d).name: read_conll(Path(d) / "validation.conll")[:eval_samples] for d in eval_dirs}
    return train, validation, corpus.labels


def training_arguments(
    output_dir: str, batch_size: int, seed: int, precision: str, use_cpu: bool, sampling: str = "random", **schedule
):
    """The seed's TrainingArguments at this precision; schedule: num_train_epochs or max_steps, logging_steps."""
    from transformers import TrainingArguments

    # transformers >= 5 names the sampler; older versions (a GPU machine's, say) had a group_by_length flag.
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        sampler = {"train_sampling_strategy": sampling}
    else:
        sampler = {"group_by_length": sampling == "group_by_length"}
    return TrainingArguments(
        output_dir=output_dir,
        log_level="error",
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        report_to="none",
        seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,  # on a CPU, else Trainer refuses bf16 ("doesn't support bf16/gpu")
        **sampler,
        **schedule,
    )


def seed_trainer(model, tokenizer, train_set, arguments, **options):
    """Trainer with the seed's collator (labels padded with -100); options: compute_metrics, callbacks."""
    from transformers import DataCollatorForTokenClassification, Trainer

    collator = DataCollatorForTokenClassification(tokenizer)
    return Trainer(
        model=model, args=arguments, data_collator=collator, train_dataset=train_set, processing_class=tokenizer,
        **options,
    )  # fmt: skip


def seed_recipe(
    model_dir: str,
    train_dirs: list[str],
    eval_dirs: list[str],
    *,
    train_samples: int | None,
    eval_samples: int | None,
    epochs: int,
    batch_size: int,
    seed: int,
    mixed_precision: str,
    sampling: str = "random",
    fractions: list[float] | None = None,
    save_to: str | None = None,
) -> dict:
    """The seed recipe trained on train_dirs concatenated and scored on each of eval_dirs: seconds of tokenizing
    (prep_s), training (train_s) and evaluating (eval_s), training tokens, F1 per set (f1: the first set's).
    save_to: also save the trained model and tokenizer there (for ner_accel.evaluate --compare)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ner_accel.modeling.loading import load_model
    from ner_accel.training.precision import resolve_mixed_precision

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    train_words, validation_words, labels = load_words(
        train_dirs, eval_dirs, train_samples, eval_samples, fractions, seed
    )
    tag2index = {tag: i for i, tag in enumerate(labels)}
    index2tag = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def tokenize_and_align_labels(examples):  # the seed's function
        tokenized_inputs = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
        labels = []
        for idx, label in enumerate(examples["ner_tags"]):
            word_ids = tokenized_inputs.word_ids(batch_index=idx)
            previous_word_idx, label_ids = None, []
            for word_idx in word_ids:
                label_ids.append(-100 if word_idx is None or word_idx == previous_word_idx else label[word_idx])
                previous_word_idx = word_idx
            labels.append(label_ids)
        tokenized_inputs["labels"] = labels
        return tokenized_inputs

    def encode(sentences):
        tags = [[tag2index[t] for t in s["tags"]] for s in sentences]
        words = Dataset.from_dict({"tokens": [s["tokens"] for s in sentences], "ner_tags": tags})
        return words.map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "ner_tags"])

    start = time.perf_counter()
    train_set = encode(train_words)
    validation_sets = {name: encode(sentences) for name, sentences in validation_words.items()}
    prep_s = time.perf_counter() - start

    def align_predictions(predictions, label_ids):  # the seed's function, verbatim
        preds = np.argmax(predictions, axis=2)
        batch_size, seq_len = preds.shape
        labels_list, preds_list = [], []
        for batch_idx in range(batch_size):
            example_labels, example_preds = [], []
            for seq_idx in range(seq_len):
                if label_ids[batch_idx, seq_idx] != -100:
                    example_labels.append(index2tag[label_ids[batch_idx][seq_idx]])
                    example_preds.append(index2tag[preds[batch_idx][seq_idx]])
            labels_list.append(example_labels)
            preds_list.append(example_preds)
        return preds_list, labels_list

    def compute_metrics(eval_pred):
        y_pred, y_true = align_predictions(eval_pred.predictions, eval_pred.label_ids)
        return {"f1": f1_score(y_true, y_pred)}

    # Same head class and initial weights as ner_accel (the seed's head: body without pooler, dropout, linear),
    # run padded with sdpa attention like transformers' own AutoModelForTokenClassification.
    model = load_model(model_dir, labels, attention="sdpa")
    tokens = TokenCount()
    tokens.watch(model)
    precision = resolve_mixed_precision(mixed_precision)  # every configuration at the same precision
    with tempfile.TemporaryDirectory() as output_dir:
        arguments = training_arguments(
            output_dir, batch_size, seed, precision, use_cpu=not torch.cuda.is_available(), sampling=sampling,
            num_train_epochs=epochs, logging_steps=max(1, 100 // batch_size),
        )  # fmt: skip
        trainer = seed_trainer(model, tokenizer, train_set, arguments, compute_metrics=compute_metrics)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        f1_per_set = {name: float(trainer.evaluate(rows)["eval_f1"]) for name, rows in validation_sets.items()}
        eval_s = time.perf_counter() - start
        if save_to:
            trainer.save_model(save_to)
            tokenizer.save_pretrained(save_to)
    real, padded = tokens.read()
    return dict(
        train_s=train_s,
        eval_s=eval_s,
        prep_s=prep_s,
        real_tokens=real,
        padded_tokens=padded,
        eval_sentences=sum(len(rows) for rows in validation_sets.values()),
        f1=next(iter(f1_per_set.values())),
        f1_per_set=f1_per_set,
        eval_sentences_per_set={name: len(rows) for name, rows in validation_sets.items()},
        precision=precision,
        train_sentences=len(train_set),
    )
