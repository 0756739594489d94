"""Training and evaluation speed of ner_accel against the seed's HF Trainer recipe, on the same work (CPU).

Default workload (shared MiniLM, 8,000 PAN-X.en sentences, full validation split, 1 epoch, batch 24, 2 rounds):
    python benchmarks/bench_train.py
XLM-R workload (xlm-roberta-base shape with random weights, real XLM-R tokenization, smaller subset):
    python benchmarks/bench_train.py --workload xlmr-random
Real multilingual weights (multilingual-e5-small, XLM-R's tokenizer) on 8,000 PAN-X.de sentences, all validation:
    python benchmarks/bench_train.py --workload e5-de
Data preparation and memory at 2k, 8k and 20k sentences (ner_accel only):
    python benchmarks/bench_train.py --scaling 2000 8000 20000 --configs ner_accel

Configurations (each run in its own process so peak memory is its own; rounds interleave them so noise shows):
  seed             the seed recipe as users run it: Trainer, DataCollatorForTokenClassification, random batches,
                   evaluation with the seed's compute_metrics (a Python loop over every position)
  trainer_grouped  the same with train_sampling_strategy="group_by_length" (the best a Trainer user gets)
  ner_accel        ner_accel.train.main([...]): the project's real training code, default flags
  bare             forward, backward, AdamW over ner_accel's own batches, pre-collated (no data loading), with
                   the padded model users get from transformers (sdpa attention): the issue's bare loop
  bare_unpadded    the same loop with ner_accel's unpadded forward: the ceiling of ner_accel's loop itself
  ner_accel_w1     ner_accel with --dataloader-num-workers 1 (a candidate default)
  ner_accel_freeze ner_accel with --freeze-word-embeddings (other results: the embedding matrix stays pretrained)

Needs: torch, transformers, datasets, seqeval, accelerate (and ner_accel installed or src/ on the path).
Writes benchmarks/results/<workload>.json and .md. Timings are the training loop's wall time (batches loaded,
forward, backward, optimizer) and the final evaluation's wall time; real tokens are non-padding tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))

PANX = SHARED / "data" / "panx"
WORKLOADS = {
    "minilm": dict(
        model=str(SHARED / "models" / "minilm-l6-h384-uncased"), data_dir=str(PANX / "en"), train_samples=8000,
        eval_samples=None,
    ),
    "xlmr-random": dict(
        model=str(SHARED / "models" / "xlm-roberta-base-shape"), data_dir=str(PANX / "en"), train_samples=600,
        eval_samples=600,
    ),
    # multilingual-e5-small (real weights, XLM-R's tokenizer), converted once per machine: see shared_models.py
    "e5-de": dict(model=None, data_dir=str(PANX / "de"), train_samples=8000, eval_samples=None),
}  # fmt: skip
CONFIGS = ["seed", "trainer_grouped", "ner_accel", "bare", "bare_unpadded", "ner_accel_w1", "ner_accel_freeze", "prep"]
DEFAULT_CONFIGS = ["seed", "trainer_grouped", "ner_accel", "bare", "bare_unpadded"]


# ---------------------------------------------------------------------------------------------------------------
# Measuring: real tokens seen in training forwards, peak memory


class TokenCounter:
    """Forward pre-hook: counts real and padded tokens of every training-mode forward (no host sync)."""

    def __init__(self, model) -> None:
        self.real, self.padded = 0, 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        if module.training and mask is not None:
            self.real += mask.sum()
            self.padded += mask.numel()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_words(data_dir: str, train_samples: int | None, eval_samples: int | None):
    """PAN-X CoNLL via ner_accel's reader (reading is not what is timed); the label order ner_accel derives."""
    from ner_accel.data.corpus import labels_from_tags
    from ner_accel.data.readers import read_conll

    train = read_conll(Path(data_dir) / "train.conll")[:train_samples]
    validation = read_conll(Path(data_dir) / "validation.conll")[:eval_samples]
    return train, validation, labels_from_tags(s["tags"] for s in train)


def load_languages(
    train_dirs: list[str],
    eval_dirs: list[str],
    train_samples: int | None,
    eval_samples: int | None,
    fractions: list[float] | None = None,
    seed: int = 42,
):
    """Several training directories concatenated (the book's concatenate_datasets) through ner_accel's own
    load_corpus, so the per-language cut and seeded fractions are ner_accel's sentences exactly; the validation
    split of each evaluation directory kept apart, keyed by folder name (the language)."""
    from ner_accel.data.corpus import load_corpus
    from ner_accel.data.readers import read_conll

    corpus = load_corpus(train_dirs, "", [], train_samples, 1, fractions, seed)
    train = [{"tokens": tokens, "tags": tags} for tokens, tags in zip(corpus.train["tokens"], corpus.train["tags"])]
    validation = {Path(d).name: read_conll(Path(d) / "validation.conll")[:eval_samples] for d in eval_dirs}
    return train, validation, corpus.labels


# ---------------------------------------------------------------------------------------------------------------
# The seed recipe with HF Trainer (baseline) and with group_by_length


def run_trainer(
    args,
    grouped: bool,
    train_dirs: list[str] | None = None,
    eval_dirs: list[str] | None = None,
    fractions: list[float] | None = None,
) -> dict:
    """The seed recipe on args.data_dir; or trained on train_dirs concatenated and scored on each of eval_dirs
    (f1_per_set by folder name; f1 is the first set's)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from seqeval.metrics import f1_score
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from ner_accel.modeling.loading import load_model
    from ner_accel.training.precision import resolve_mixed_precision

    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    if train_dirs:
        train_words, validation_words, labels = load_languages(
            train_dirs, eval_dirs or train_dirs, args.train_samples, args.eval_samples, fractions, args.seed
        )
    else:
        train_words, validation, labels = load_words(args.data_dir, args.train_samples, args.eval_samples)
        validation_words = {Path(args.data_dir).name: validation}
    tag2index = {tag: i for i, tag in enumerate(labels)}
    index2tag = dict(enumerate(labels))
    tokenizer = AutoTokenizer.from_pretrained(args.model)

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
        words = Dataset.from_dict(
            {
                "tokens": [s["tokens"] for s in sentences],
                "ner_tags": [[tag2index[t] for t in s["tags"]] for s in sentences],
            }
        )
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
    model = load_model(args.model, labels, attention="sdpa")
    counter = TokenCounter(model)
    precision = resolve_mixed_precision(args.mixed_precision)  # every configuration at the same precision
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            log_level="error",
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            eval_strategy="no",
            save_strategy="no",
            weight_decay=0.01,
            disable_tqdm=True,
            logging_steps=max(1, 100 // args.batch_size),
            report_to="none",
            seed=args.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not torch.cuda.is_available(),  # else Trainer refuses bf16 on a CPU ("doesn't support bf16/gpu")
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            compute_metrics=compute_metrics,
            train_dataset=train_set,
            eval_dataset=next(iter(validation_sets.values())),
            processing_class=tokenizer,
        )
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        f1_per_set = {name: float(trainer.evaluate(rows)["eval_f1"]) for name, rows in validation_sets.items()}
        eval_s = time.perf_counter() - start
    return dict(
        train_s=train_s,
        eval_s=eval_s,
        prep_s=prep_s,
        real_tokens=int(counter.real),
        padded_tokens=int(counter.padded),
        eval_sentences=sum(len(rows) for rows in validation_sets.values()),
        f1=next(iter(f1_per_set.values())),
        f1_per_set=f1_per_set,
        eval_sentences_per_set={name: len(rows) for name, rows in validation_sets.items()},
        precision=precision,
        train_sentences=len(train_set),
    )


# ---------------------------------------------------------------------------------------------------------------
# ner_accel's real training code, timed from outside with monkeypatched wrappers


def run_ner_accel(args, workers: int = 0, extra: tuple[str, ...] = ()) -> dict:
    from ner_accel import train as T
    from ner_accel.data import loaders as L

    timings = {"train_s": 0.0, "eval_s": [], "prep_s": 0.0, "validate_s": 0.0}
    counters, training = [], [False]

    def timed_steps(loader, size):
        start, training[0] = time.perf_counter(), True
        yield from optimizer_steps(loader, size)
        timings["train_s"] += time.perf_counter() - start
        training[0] = False

    def timed_scoring(*a, **k):
        start = time.perf_counter()
        results = score_sets(*a, **k)
        timings["eval_s"].append(time.perf_counter() - start)
        return results

    def timed_validation(*a, **k):
        # Evaluations and their checkpoints inside the loop are timed with it: take them out of training time.
        start = time.perf_counter()
        validate(*a, **k)
        if training[0]:
            timings["validate_s"] += time.perf_counter() - start

    def timed_encode(*a, **k):
        start = time.perf_counter()
        rows = encode_dataset(*a, **k)
        timings["prep_s"] += time.perf_counter() - start
        return rows

    def counted_model(*a, **k):
        model = load_model(*a, **k)
        counters.append(TokenCounter(model))
        return model

    optimizer_steps, score_sets, validate, encode_dataset, load_model = (
        T.optimizer_steps,
        T.score_sets,
        T.validate,
        L.encode_dataset,
        T.load_model,
    )
    T.optimizer_steps, T.score_sets, T.validate, L.encode_dataset, T.load_model = (
        timed_steps,
        timed_scoring,
        timed_validation,
        timed_encode,
        counted_model,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        os.environ["HF_DATASETS_CACHE"] = str(Path(output_dir) / "cache")  # cold cache: tokenization is timed
        argv = [
            "--model",
            args.model,
            "--data-dir",
            args.data_dir,
            "--num-train-epochs",
            str(args.epochs),
            "--per-device-train-batch-size",
            str(args.batch_size),
            "--seed",
            str(args.seed),
            "--output-dir",
            output_dir,
            "--run-name",
            "bench",
            "--overwrite",
            "--max-train-samples",
            str(args.train_samples),
        ]
        argv += ["--max-eval-samples", str(args.eval_samples)] if args.eval_samples else []
        argv += ["--dataloader-num-workers", str(workers)] if workers else []
        argv += ["--mixed-precision", args.mixed_precision, *extra]
        start = time.perf_counter()
        final = next(v for k, v in T.train(T.parse_config(argv)).items() if k != "mean_f1")
        total_s = time.perf_counter() - start
        config = json.loads((Path(output_dir) / "bench" / T.CONFIG_FILE).read_text())
    counter = counters[0]
    return dict(
        train_s=timings["train_s"] - timings["validate_s"],
        eval_s=timings["eval_s"][-1],
        prep_s=timings["prep_s"],
        total_s=total_s,
        real_tokens=int(counter.real),
        padded_tokens=int(counter.padded),
        eval_sentences=final["sentences"],
        f1=final["f1"],
        precision=config["mixed_precision"],
        train_sentences=args.train_samples,
    )


def run_bare(args, unpadded: bool) -> dict:
    """Forward, backward, AdamW step over ner_accel's exact batches, collated before the clock starts."""
    import torch

    from ner_accel.data.batching import make_loader
    from ner_accel.data.corpus import load_corpus
    from ner_accel.data.encoding import encode_dataset
    from ner_accel.modeling.loading import load_model, load_tokenizer
    from ner_accel.modeling.unpadding import UNPADDED
    from ner_accel.training.optimization import build_optimizer
    from ner_accel.training.precision import resolve_mixed_precision

    torch.manual_seed(args.seed)
    precision = resolve_mixed_precision(args.mixed_precision)
    tokenizer = load_tokenizer(args.model)
    corpus = load_corpus([args.data_dir], "", [], args.train_samples, 1, seed=args.seed)
    with tempfile.TemporaryDirectory() as cache:
        rows = encode_dataset(
            corpus.train,
            tokenizer,
            corpus.labels,
            min(tokenizer.model_max_length, 512),
            False,
            "train",
            cache_dir=cache,
        )
        loader = make_loader(rows, tokenizer, args.batch_size, args.seed, train=True)
        batches = [dict(batch) for _ in range(args.epochs) for batch in loader]
    model = load_model(args.model, corpus.labels, attention=UNPADDED if unpadded else "sdpa")
    model.train()
    optimizer = build_optimizer(model, learning_rate=5e-5, weight_decay=0.01)  # the seed's
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    start = time.perf_counter()
    for batch in batches:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - start
    return dict(train_s=train_s, real_tokens=real, padded_tokens=padded, precision=precision, train_sentences=len(rows))


def run_prep(args) -> dict:
    """ner_accel's data path alone: read, tokenize into a fresh on-disk cache, build the loader, collate every batch."""
    from ner_accel.data.batching import make_loader, padding_efficiency
    from ner_accel.data.corpus import load_corpus
    from ner_accel.data.encoding import encode_dataset
    from ner_accel.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        corpus = load_corpus([args.data_dir], "", [], args.train_samples, 1, seed=args.seed)
        rows = encode_dataset(
            corpus.train,
            tokenizer,
            corpus.labels,
            min(tokenizer.model_max_length, 512),
            False,
            "train",
            cache_dir=cache,
        )
        prep_s = time.perf_counter() - start
        loader = make_loader(rows, tokenizer, args.batch_size, args.seed, train=True)
        start = time.perf_counter()
        real = padded = 0
        for batch in loader:
            real, padded = real + int(batch["attention_mask"].sum()), padded + batch["attention_mask"].numel()
        collate_s = time.perf_counter() - start
        return dict(
            prep_s=prep_s,
            collate_s=collate_s,
            train_sentences=len(rows),
            real_tokens=real,
            padded_tokens=padded,
            train_s=collate_s,
            precision="-",
            memory_mapped=bool(rows.cache_files),
            sampler_padding_efficiency=padding_efficiency(rows["length"], list(loader.batch_sampler)),
        )


def worker(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = {
        "prep": lambda: run_prep(args),
        "seed": lambda: run_trainer(args, grouped=False),
        "trainer_grouped": lambda: run_trainer(args, grouped=True),
        "ner_accel": lambda: run_ner_accel(args),
        "ner_accel_w1": lambda: run_ner_accel(args, workers=1),
        "ner_accel_freeze": lambda: run_ner_accel(args, extra=("--freeze-word-embeddings",)),
        "bare": lambda: run_bare(args, unpadded=False),
        "bare_unpadded": lambda: run_bare(args, unpadded=True),
    }[args.worker]
    result = run()
    result.update(config=args.worker, peak_rss_mib=peak_rss_mib())
    result["tokens_per_s"] = result["real_tokens"] / result["train_s"]
    result["padding_efficiency"] = result["real_tokens"] / result["padded_tokens"]
    if "eval_s" in result:
        result["eval_sentences_per_s"] = result["eval_sentences"] / result["eval_s"]
    Path(args.result).write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# Orchestration: interleaved rounds, summary, JSON and markdown


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        load_average=os.getloadavg(),
    )


def spawn(args, config: str, result: Path, **overrides) -> dict:
    argv = [
        sys.executable,
        __file__,
        "--worker",
        config,
        "--result",
        str(result),
        "--model",
        args.model,
        "--data-dir",
        args.data_dir,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(overrides.get("seed", args.seed)),
        "--train-samples",
        str(overrides.get("train_samples", args.train_samples)),
    ]
    eval_samples = overrides.get("eval_samples", args.eval_samples)
    argv += ["--eval-samples", str(eval_samples)] if eval_samples else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--mixed-precision", args.mixed_precision]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    measured = json.loads(result.read_text())
    # The whole process as a user waits for it: start-up, imports, model load, data preparation, training, evaluation.
    measured["process_s"] = time.perf_counter() - started
    return measured


def summarise(runs: list[dict], baseline: str = "seed") -> dict:
    keys = [
        "tokens_per_s",
        "eval_sentences_per_s",
        "padding_efficiency",
        "peak_rss_mib",
        "f1",
        "train_s",
        "eval_s",
        "prep_s",
        "process_s",
    ]
    summary = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == config]
        summary[config] = {
            k: {
                "median": statistics.median(r[k] for r in mine),
                "min": min(r[k] for r in mine),
                "max": max(r[k] for r in mine),
            }
            for k in keys
            if k in mine[0]
        }
        summary[config]["precision"] = mine[0]["precision"]
    if baseline in summary:
        base = summary[baseline]
        for values in summary.values():
            for k in ("tokens_per_s", "eval_sentences_per_s"):
                if k in values and k in base:
                    values[f"{k}_ratio"] = values[k]["median"] / base[k]["median"]
            if "process_s" in values and "process_s" in base:  # a speed-up: the baseline's time over this one's
                values["process_speedup"] = base["process_s"]["median"] / values["process_s"]["median"]
            if "f1" in values and "f1" in base:
                values["f1_delta"] = values["f1"]["median"] - base["f1"]["median"]
        seeds = {r["round"]: r["seed"] for r in runs}
        if len(set(seeds.values())) > 1:  # --vary-seed: F1 differences paired by training seed
            base_f1 = {r["round"]: r["f1"] for r in runs if r["config"] == baseline and "f1" in r}
            for config, values in summary.items():
                mine = {r["round"]: r["f1"] for r in runs if r["config"] == config and "f1" in r}
                if config == baseline or not mine:
                    continue
                deltas = [mine[k] - base_f1[k] for k in mine if k in base_f1]
                values["f1_paired"] = dict(
                    mean=statistics.mean(deltas),
                    sd=statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
                    deltas=deltas,
                )
    for config, values in summary.items():
        f1s = [r["f1"] for r in runs if r["config"] == config and "f1" in r]
        if len(f1s) > 1:
            values["f1"].update(mean=statistics.mean(f1s), sd=statistics.stdev(f1s))
    if "trainer_grouped" in summary and "ner_accel" in summary:
        summary["ner_accel"]["tokens_per_s_vs_trainer_grouped"] = (
            summary["ner_accel"]["tokens_per_s"]["median"] / summary["trainer_grouped"]["tokens_per_s"]["median"]
        )
    if "process_s" in summary.get("trainer_grouped", {}) and "process_s" in summary.get("ner_accel", {}):
        summary["ner_accel"]["process_speedup_vs_trainer_grouped"] = (
            summary["trainer_grouped"]["process_s"]["median"] / summary["ner_accel"]["process_s"]["median"]
        )
    for bare in ("bare", "bare_unpadded"):
        if bare in summary and "ner_accel" in summary:
            summary["ner_accel"][f"tokens_per_s_vs_{bare}"] = (
                summary["ner_accel"]["tokens_per_s"]["median"] / summary[bare]["tokens_per_s"]["median"]
            )
    return summary


def markdown(report: dict) -> str:
    m, s = report["machine"], report["summary"]
    lines = [
        f"### {report['workload']}: {report['settings']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({report['threads'] or m['torch_threads']} "
        f"thread(s) per run); "
        f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}. "
        f"Median of {report['rounds']} interleaved round(s), [min-max] in brackets.",
        "",
        "| config | precision | train real tok/s | x seed | eval sent/s | x seed | process s | x seed | padding eff. "
        "| peak RSS MiB | F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(v, k, fmt):
        if k not in v:
            return "-"
        return (
            f"{v[k]['median']:{fmt}} [{v[k]['min']:{fmt}}-{v[k]['max']:{fmt}}]"
            if report["rounds"] > 1
            else (f"{v[k]['median']:{fmt}}")
        )

    def ratio(v, k):
        return f"{v[k]:.2f}" if k in v else "-"

    for config, v in s.items():
        lines.append(
            f"| {config} | {v['precision']} | {cell(v, 'tokens_per_s', ',.0f')} | {ratio(v, 'tokens_per_s_ratio')} | "
            f"{cell(v, 'eval_sentences_per_s', ',.0f')} | {ratio(v, 'eval_sentences_per_s_ratio')} | "
            f"{cell(v, 'process_s', ',.1f')} | {ratio(v, 'process_speedup')} | "
            f"{cell(v, 'padding_efficiency', '.3f')} | {cell(v, 'peak_rss_mib', ',.0f')} | {cell(v, 'f1', '.4f')} |"
        )
    extra = s.get("ner_accel", {})
    if "tokens_per_s_vs_trainer_grouped" in extra:
        lines += [
            "",
            f"ner_accel / Trainer+group_by_length training throughput: {extra['tokens_per_s_vs_trainer_grouped']:.2f}x",
        ]
    if "process_speedup_vs_trainer_grouped" in extra:
        lines += [
            f"ner_accel / Trainer+group_by_length whole process: {extra['process_speedup_vs_trainer_grouped']:.2f}x"
        ]
    if "tokens_per_s_vs_bare" in extra:
        lines += [f"ner_accel / bare padded loop on the same batches: {extra['tokens_per_s_vs_bare']:.2f}"]
    if "tokens_per_s_vs_bare_unpadded" in extra:
        lines += [
            f"ner_accel / bare unpadded loop (its own loop's ceiling): {extra['tokens_per_s_vs_bare_unpadded']:.2f}"
        ]
    paired = {config: v["f1_paired"] for config, v in s.items() if "f1_paired" in v}
    if paired:
        seeds = sorted({r["seed"] for r in report["runs"]})
        lines += [
            "",
            f"F1 over training seeds {', '.join(map(str, seeds))} (one per round; same data, same initial body):",
        ]
        lines += [
            f"- {config}: mean {v['f1']['mean']:.4f}, sd {v['f1']['sd']:.4f}"
            for config, v in s.items()
            if "mean" in v.get("f1", {})
        ]
        for config, p in paired.items():
            deltas = ", ".join(f"{d:+.4f}" for d in p["deltas"])
            lines.append(f"- {config} - seed, paired by seed: mean {p['mean']:+.4f}, sd {p['sd']:.4f} ({deltas})")
    if report.get("scaling"):
        lines += [
            "",
            "ner_accel data preparation (read, tokenize into the on-disk cache, collate every batch):",
            "",
            "| sentences | tokenize ms/sentence | collate ms/sentence | padding eff. | memory-mapped | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["scaling"]:
            n = row["train_sentences"]
            lines.append(
                f"| {n} | {1000 * row['prep_s'] / n:.3f} | {1000 * row['collate_s'] / n:.3f} | "
                f"{row['padding_efficiency']:.3f} | {row['memory_mapped']} | {row['peak_rss_mib']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Workload
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="minilm")
    parser.add_argument("--model", help="model directory (default: the workload's)")
    parser.add_argument("--data-dir", help="PAN-X-style directory (default: the workload's)")
    parser.add_argument("--train-samples", type=int, help="training sentences (default: the workload's)")
    parser.add_argument("--eval-samples", type=int, help="validation sentences (default: the workload's; none = all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "bf16", "fp16"],
        default="auto",
        help="precision of every configuration (auto: ner_accel's default resolution, bf16 on CPUs that have it)",
    )
    # Runs
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=DEFAULT_CONFIGS)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every configuration")
    parser.add_argument(
        "--vary-seed",
        action="store_true",
        help="round r trains with --seed + r (every configuration alike), so F1's spread over seeds shows",
    )
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="*",
        default=[],
        help="also time ner_accel's data preparation (tokenize, cache, collate) at these sizes",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default torch's); 1 keeps a shared, oversubscribed CPU fair",
    )
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/<workload>.json)")
    # Internal: one configuration in this process
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    args.data_dir = args.data_dir or workload["data_dir"]
    if args.train_samples is None:
        args.train_samples = workload["train_samples"]
    if args.eval_samples is None:
        args.eval_samples = workload["eval_samples"]
    if args.worker:
        args.model = args.model or workload["model"]
        return worker(args)

    missing = [name for name in ("datasets", "seqeval", "accelerate", "transformers") if not _importable(name)]
    if missing:
        sys.exit(f"bench_train.py needs {', '.join(missing)}: pip install {' '.join(missing)}")
    output = Path(args.output or RESULTS / f"{args.workload}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        args.model = workload["model"]
        if args.workload == "xlmr-random":  # one random-weight checkpoint that every configuration loads
            args.model = str(random_xlmr(output.parent / "xlm-roberta-base-random", args.seed))
        if args.workload == "e5-de":  # converted into the machine's cache on first use, outside the checkout
            from shared_models import multilingual_e5_small  # a sibling script: benchmarks/ is on sys.path

            args.model = str(multilingual_e5_small())
    load_before = os.getloadavg()
    runs, scaling = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for config in args.configs:
                seed = args.seed + round_ if args.vary_seed else args.seed
                print(f"[bench] round {round_ + 1}/{args.rounds} (seed {seed}): {config}", file=sys.stderr, flush=True)
                result = spawn(args, config, Path(scratch) / f"{config}-{round_}.json", seed=seed)
                runs.append({**result, "round": round_, "seed": seed})
                print(f"[bench] {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
        for size in args.scaling:
            print(f"[bench] scaling: ner_accel data preparation on {size} sentences", file=sys.stderr, flush=True)
            scaling.append(spawn(args, "prep", Path(scratch) / f"scaling-{size}.json", train_samples=size))
    report = dict(
        workload=args.workload,
        machine=machine(),
        load_before=load_before,
        load_after=os.getloadavg(),
        rounds=args.rounds,
        threads=args.threads,
        settings=f"{Path(args.model).name}, {args.train_samples} train sentences from {Path(args.data_dir).name}, "
        f"{args.eval_samples or 'all'} validation sentences, {args.epochs} epoch(s), batch {args.batch_size}",
        summary=summarise(runs),
        runs=runs,
        scaling=scaling,
    )
    output.write_text(json.dumps(report, indent=1))
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def random_xlmr(path: Path, seed: int) -> Path:
    """xlm-roberta-base from its config with random weights, saved once with the real XLM-R tokenizer."""
    if (path / "model.safetensors").is_file():
        return path
    import torch
    from transformers import AutoTokenizer

    from ner_accel.modeling.loading import load_model

    torch.manual_seed(seed)
    source = WORKLOADS["xlmr-random"]["model"]
    model = load_model(source, ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"], from_config=True)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


if __name__ == "__main__":
    main()
