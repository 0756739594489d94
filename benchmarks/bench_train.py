"""Training and evaluation speed of ner_accel against the seed's HF Trainer recipe, on the same work (CPU).

Default workload (shared MiniLM, 8,000 PAN-X.en sentences, full validation split, 1 epoch, batch 24, 2 rounds):
    python benchmarks/bench_train.py
XLM-R workload (xlm-roberta-base shape with random weights, real XLM-R tokenization, smaller subset):
    python benchmarks/bench_train.py --workload xlmr-random
Real multilingual weights (multilingual-e5-small, XLM-R's tokenizer) on 8,000 PAN-X.de sentences, all validation:
    python benchmarks/bench_train.py --workload e5-de
Data preparation and memory at 2k, 8k and 20k sentences (ner_accel only):
    python benchmarks/bench_train.py --scaling 2000 8000 20000 --configs ner_accel
Run as a file it puts the checkout's root and src/ first on the path; `python -m benchmarks.bench_train` (from the
checkout's root) needs ner_accel installed or PYTHONPATH=src.

Configurations (each run in its own process so peak memory is its own; rounds interleave them so noise shows):
  seed             the seed recipe as users run it (trainer_baseline.py): Trainer, DataCollatorForTokenClassification,
                   random batches, evaluation with the seed's compute_metrics (a Python loop over every position)
  trainer_grouped  the same with train_sampling_strategy="group_by_length" (the best a Trainer user gets)
  ner_accel        ner_accel.train.main([...]) as a user runs it, default flags; nothing in it is patched or wrapped
  bare             forward, backward, AdamW over ner_accel's own batches, pre-collated (no data loading), with
                   the padded model users get from transformers (sdpa attention): the issue's bare loop
  bare_unpadded    the same loop with ner_accel's unpadded forward (batches with their packing): the ceiling of
                   ner_accel's forward and backward
  ner_accel_w1     ner_accel with --dataloader-num-workers 1 (a candidate default)
  ner_accel_freeze ner_accel with --freeze-word-embeddings (other results: the embedding matrix stays pretrained)

Needs: torch, transformers, datasets, seqeval, accelerate. Writes benchmarks/results/<workload>.json and .md.
train_s is the training loop's wall time (batches loaded, forward, backward, clip, optimizer), eval_s an evaluation's
wall time, prep_s tokenizing; real tokens are non-padding tokens in training batches. For ner_accel these come from
the run itself: the phases it times and writes to metrics.json ("seconds"), and the batches its sampler draws.
What that changed against the numbers in BENCHMARKS.md, which came from wrapping five of train's functions:
  train_s  the "train" phase: the loop with the evaluations and checkpoints inside it taken out, as before
  eval_s   the "evaluate" phase over the run's full evaluations (one per epoch by default): it now holds the 2-batch
           sanity evaluation at step 0 too (before: the last evaluation alone)
  prep_s   the "tokenize" phase: train and validation sets tokenized into a cold cache and their loaders built
           (before: the tokenizing alone)
  tokens   the run's sampler's batches of every epoch over its encoded rows' lengths, padded as its collator pads
           them (before: counted in the model's training forwards; the same numbers)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.machine import describe, one_line
from benchmarks.shared_models import SHARED, multilingual_e5_small, random_weights
from benchmarks.tokens import TokenCount
from benchmarks.trainer_baseline import LEARNING_RATE, WEIGHT_DECAY, seed_recipe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------
# The seed recipe with HF Trainer (baseline), as trainer_baseline.py runs it


def run_trainer(args, grouped: bool) -> dict:
    """The seed recipe on args.data_dir, scored on its validation split."""
    return seed_recipe(
        args.model, [args.data_dir], [args.data_dir], train_samples=args.train_samples,
        eval_samples=args.eval_samples, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        mixed_precision=args.mixed_precision, sampling="group_by_length" if grouped else "random",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# ner_accel's real training code, as a user runs it: phases from its metrics.json, tokens from its batches


def run_ner_accel(args, workers: int = 0, extra: tuple[str, ...] = ()) -> dict:
    from ner_accel.options.train_config import parse_config
    from ner_accel.rundir.artifacts import CONFIG_FILE, METRICS_FILE
    from ner_accel.train import main as train_main

    with tempfile.TemporaryDirectory() as output_dir:
        os.environ["HF_DATASETS_CACHE"] = str(Path(output_dir) / "cache")  # cold cache: tokenization is timed
        argv = ["--model", args.model, "--data-dir", args.data_dir, "--num-train-epochs", str(args.epochs)]
        argv += ["--per-device-train-batch-size", str(args.batch_size), "--seed", str(args.seed)]
        argv += ["--output-dir", output_dir, "--run-name", "bench", "--overwrite"]
        argv += ["--max-train-samples", str(args.train_samples)]
        argv += ["--max-eval-samples", str(args.eval_samples)] if args.eval_samples else []
        argv += ["--dataloader-num-workers", str(workers)] if workers else []
        argv += ["--mixed-precision", args.mixed_precision, *extra]
        start = time.perf_counter()
        exit_code = train_main(argv)
        total_s = time.perf_counter() - start
        if exit_code != 0:
            sys.exit(f"ner_accel.train {' '.join(argv)}: exit code {exit_code}")
        config = parse_config(argv)
        metrics = json.loads((config.run_dir / METRICS_FILE).read_text())
        resolved = json.loads((config.run_dir / CONFIG_FILE).read_text())
        real, padded = trained_tokens(config).read()  # the run's tokenization cache is still there
    seconds = metrics["seconds"]
    evaluations = sum("validation" in entry for entry in metrics["evaluations"])
    final = next(v for k, v in metrics["final"].items() if k != "mean_f1")
    return dict(
        train_s=seconds["train"],
        eval_s=seconds["evaluate"] / evaluations,
        prep_s=seconds["tokenize"],
        phases_s=seconds,
        total_s=total_s,
        real_tokens=real,
        padded_tokens=padded,
        eval_sentences=final["sentences"],
        f1=final["f1"],
        precision=resolved["mixed_precision"],
        train_sentences=args.train_samples,
    )


def trained_tokens(config) -> TokenCount:
    """The tokens of every batch a finished run trained on: its sampler's batches of each epoch over its encoded
    rows, from the loaders train builds (build_loaders, on the run's tokenization cache), padded as its collator."""
    from ner_accel.data.batching import pad_multiple
    from ner_accel.data.corpus import load_corpus
    from ner_accel.data.loaders import build_loaders
    from ner_accel.modeling.loading import load_tokenizer
    from ner_accel.training.precision import make_accelerator

    accelerator = make_accelerator(config.mixed_precision)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    loaders = build_loaders(config, accelerator, tokenizer, load_corpus(config.corpus_options()), pack=False)
    sampler, batches = loaders.train.batch_sampler, []
    for epoch in range(config.num_train_epochs):
        sampler.set_epoch(epoch)
        batches += list(sampler)
    multiple = pad_multiple(accelerator.device, accelerator.mixed_precision)
    return TokenCount.of_batches(sampler.lengths, batches, multiple)


# ---------------------------------------------------------------------------------------------------------------
# ner_accel's batches without its loop: the bare loops, and the data path alone


def encoded_train(args, tokenizer, cache: str):
    """ner_accel's corpus for this workload and its training rows, tokenized into `cache`."""
    from ner_accel.data.corpus import CorpusOptions, load_corpus
    from ner_accel.data.encoding import encode_dataset
    from ner_accel.modeling.loading import sequence_limit

    options = CorpusOptions(data_dir=[args.data_dir], max_train_samples=args.train_samples, max_eval_samples=1,
                            seed=args.seed)  # fmt: skip
    corpus = load_corpus(options)
    rows = encode_dataset(corpus.train, tokenizer, corpus.labels, sequence_limit(tokenizer), False, "train", cache)
    return corpus, rows


def run_bare(args, unpadded: bool) -> dict:
    """Forward, backward, AdamW step over ner_accel's exact batches, collated before the clock starts."""
    import torch

    from ner_accel.data.batching import make_loader
    from ner_accel.modeling.loading import load_model, load_tokenizer
    from ner_accel.modeling.unpadding import UNPADDED
    from ner_accel.training.optimization import build_optimizer
    from ner_accel.training.precision import resolve_mixed_precision

    torch.manual_seed(args.seed)
    precision = resolve_mixed_precision(args.mixed_precision)
    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as cache:
        corpus, rows = encoded_train(args, tokenizer, cache)
        loader = make_loader(rows, tokenizer, args.batch_size, args.seed, train=True, pack=unpadded)
        batches = [dict(batch) for _ in range(args.epochs) for batch in loader]
    model = load_model(args.model, corpus.labels, attention=UNPADDED if unpadded else "sdpa")
    model.train()
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY)  # the seed's
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    tokens = TokenCount()
    for batch in batches:
        tokens.add(batch["attention_mask"])
    start = time.perf_counter()
    for batch in batches:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    train_s = time.perf_counter() - start
    real, padded = tokens.read()
    return dict(train_s=train_s, real_tokens=real, padded_tokens=padded, precision=precision, train_sentences=len(rows))


def run_prep(args) -> dict:
    """ner_accel's data path alone: read, tokenize into a fresh on-disk cache, build the loader, collate every batch."""
    from ner_accel.data.batching import make_loader, padding_efficiency
    from ner_accel.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        _, rows = encoded_train(args, tokenizer, cache)
        prep_s = time.perf_counter() - start
        loader = make_loader(rows, tokenizer, args.batch_size, args.seed, train=True)
        tokens = TokenCount()
        start = time.perf_counter()
        for batch in loader:
            tokens.add(batch["attention_mask"])
        collate_s = time.perf_counter() - start
        real, padded = tokens.read()
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
        f"Machine: {one_line(m)} ({report['threads'] or m['torch_threads']} torch thread(s) per run); "
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
            args.model = str(random_weights(args.model, output.parent / "xlm-roberta-base-random", args.seed))
        if args.workload == "e5-de":  # converted into the machine's cache on first use, outside the checkout
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
        machine=describe(),
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


if __name__ == "__main__":
    main()
