r"""Evaluate trained models on any split of any number of datasets: F1 per language and entity type, the
cross-lingual matrix (training languages as rows, test languages as columns) and the book's error analysis.

One model on two local languages, with error analysis:
    python -m ner_accel.evaluate --model artifacts/run --data-dir ../shared/data/panx/de ../shared/data/panx/fr \
        --error-analysis
The cross-lingual matrix of three models on three languages:
    python -m ner_accel.evaluate --model runs/de runs/en runs/fr --data-dir ../shared/data/panx/{de,en,fr}
Hub PAN-X, several processes:
    accelerate launch -m ner_accel.evaluate --model runs/de --languages de fr it en --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from rich.console import Console

from .data.batching import make_loader, pad_multiple
from .data.corpus import check_known_tags, source_names, subsample, to_dataset
from .data.encoding import encode_dataset
from .data.panx_hub import load_hub_panx
from .data.readers import TAG_SCHEMES, check_data_dir, find_split_file, missing_split, read_split
from .errors import UsageError, run_command
from .evaluation.analysis import error_analysis, scored_words
from .evaluation.metrics import entity_metrics
from .evaluation.scoring import collect_predictions
from .modeling.loading import load_tokenizer, load_trained, sequence_limit
from .modeling.unpadding import UNPADDED
from .options.checks import check_values
from .options.parsing import CommandParser
from .reporting.console import cross_lingual_table, language_table, matrix_markdown, print_analysis, setup_logging
from .reporting.html_report import load_training_metrics, write_html
from .rundir.artifacts import CONFIG_FILE, MODEL_DIR
from .rundir.files import check_output_file, write_json
from .training.precision import end_accelerator, make_accelerator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(
        "evaluate", __doc__, "--model DIR [DIR ...] (--data-dir DIR [DIR ...] | --languages LANG [LANG ...]) [options]"
    )
    # Models
    parser.add_argument("--model", nargs="+", required=True, help="Run directories (with model/) or model directories.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow model code from the model directory.")
    # Data
    parser.add_argument("--data-dir", nargs="+", help="Local directories with <split>.conll or <split>.jsonl files.")
    parser.add_argument("--languages", nargs="+", help="PAN-X languages read from --dataset (Hub or local copy).")
    parser.add_argument("--dataset", default="google/xtreme", help="Hub id or local copy of XTREME (with --languages).")
    parser.add_argument("--split", default="validation", help="Split to evaluate: train, validation or test.")
    parser.add_argument(
        "--tag-scheme",
        default="auto",
        type=str.lower,
        choices=[*TAG_SCHEMES, "iobes"],
        help="Tag scheme of --data-dir files (auto: detected per file); scored as IOB2 whatever it is.",
    )
    parser.add_argument("--max-eval-samples", type=int, help="Use only the first N sentences of each dataset.")
    parser.add_argument("--max-length", type=int, help="Truncate to this many sub-tokens (default: the model's limit).")
    # Runtime
    parser.add_argument("--per-device-batch-size", type=int, default=96, help="Sentences per device per batch.")
    parser.add_argument(
        "--mixed-precision",
        default="auto",
        choices=["auto", "no", "fp16", "bf16"],
        help="auto: the accelerate config's choice, else bf16 where the device supports it, else no.",
    )
    # Output
    parser.add_argument("--output", help="JSON file to write with every metric and the analysis (default: none).")
    parser.add_argument(
        "--html", help="Self-contained HTML report to write: scores, confusion heat maps, worst sentences, curves."
    )
    parser.add_argument(
        "--error-analysis", action="store_true", help="Print worst sentences, confusions, lossy tokens."
    )
    parser.add_argument("--worst", type=int, default=10, help="Worst sentences kept in the error analysis.")
    parser.add_argument("--top-tokens", type=int, default=10, help="Tokens with the most loss kept in the analysis.")
    parser.add_argument("--markdown", action="store_true", help="Also print the cross-lingual table as Markdown.")
    args = parser.parse_args(argv)
    if bool(args.data_dir) == bool(args.languages):
        raise UsageError("pass exactly one of --data-dir <dir> ... (local files) or --languages <lang> ... (PAN-X)")
    check_values(vars(args))
    for flag in ("output", "html"):
        if getattr(args, flag) is not None:
            check_output_file(getattr(args, flag), f"--{flag}")
    return args


# ---------------------------------------------------------------------------------------------------------------
# Inputs: evaluation sets (word level) and trained models


def load_eval_sets(args: argparse.Namespace) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Word-level sentences of the chosen split, one entry per language or local directory, and where each came
    from (for messages)."""
    sets, origins = {}, {}
    if args.data_dir:
        for name, root in source_names(args.data_dir).items():
            path = find_split_file(check_data_dir(str(root)), args.split)
            if path is None:
                raise UsageError(f"{missing_split(root, args.split)}, or choose another --split")
            sets[name], origins[name] = read_split(path, args.tag_scheme), str(path)
    else:
        for language in args.languages:
            splits, _ = load_hub_panx(args.dataset, language)
            if args.split not in splits:
                raise UsageError(f"PAN-X.{language} has no '{args.split}' split; choose one of {sorted(splits)}")
            sets[language], origins[language] = splits[args.split], f"PAN-X.{language}/{args.split}"
    return {name: subsample(sentences, args.max_eval_samples, None, 0) for name, sentences in sets.items()}, origins


def model_dir(path: str) -> Path:
    """A run directory's model/ folder, or the given directory when it is a model itself."""
    root = Path(path)
    for candidate in (root / MODEL_DIR, root):
        if (candidate / "config.json").is_file():
            return candidate
    raise UsageError(f"--model {path}: no trained model here; pass a run directory (with model/) or a model directory")


def training_name(path: str) -> str:
    """What the model was trained on (e.g. 'de' or 'de+fr'), the row name of the cross-lingual matrix."""
    config_file = Path(path) / CONFIG_FILE
    if not config_file.is_file():
        return Path(path).resolve().name
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        sources = (
            [Path(d.rstrip("/")).name for d in config["data_dir"]] if config.get("data_dir") else config["languages"]
        )
        return "+".join(sources)
    except (ValueError, KeyError, TypeError, AttributeError):  # not a ner_accel run's config: name it by its folder
        return Path(path).resolve().name


# ---------------------------------------------------------------------------------------------------------------
# Evaluation of one model on every set


def evaluate_model(
    path: str, sets: dict[str, list[dict]], origins: dict[str, str], args: argparse.Namespace, accelerator: Accelerator
) -> dict:
    """Metrics and error analysis of one model on each evaluation set."""
    directory = model_dir(path)
    tokenizer = load_tokenizer(str(directory), args.trust_remote_code)
    model = load_trained(str(directory), args.trust_remote_code)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    max_length = sequence_limit(tokenizer, args.max_length)
    pad_to = pad_multiple(accelerator.device, accelerator.mixed_precision)
    loaders, orders = {}, {}
    for name, sentences in sets.items():
        check_known_tags(sentences, labels, origins[name], "the model's labels")
        with accelerator.main_process_first():
            rows = encode_dataset(
                to_dataset(sentences, name), tokenizer, labels, max_length, False, f"{name}/{args.split}"
            )
        loaders[name] = make_loader(
            rows,
            tokenizer,
            args.per_device_batch_size * accelerator.num_processes,
            seed=0,
            train=False,
            pad_to_multiple_of=pad_to,
            pack=model.config._attn_implementation == UNPADDED,
        )
        # Loaders yield sentences longest first; this order maps results back to the file's order.
        orders[name] = np.argsort([i for batch in loaders[name].batch_sampler for i in batch], kind="stable")
    model, *prepared = accelerator.prepare(model, *loaders.values())
    results = {}
    for (name, sentences), loader in zip(sets.items(), prepared):
        predictions = collect_predictions(model, loader, accelerator, model.config.id2label)
        gold, predicted, losses = (
            [values[i] for i in orders[name]]
            for values in (predictions.gold, predictions.predicted, predictions.losses)
        )
        words = scored_words(tokenizer, [s["tokens"] for s in sentences], max_length)
        results[name] = {
            **entity_metrics(gold, predicted),
            "sentences": len(gold),
            "analysis": error_analysis(words, gold, predicted, losses, labels, args.worst, args.top_tokens),
        }
    accelerator.free_memory()
    return results


def run(args: argparse.Namespace) -> dict:
    """Evaluate every model on every set; print the tables and write the JSON on the main process."""
    accelerator = make_accelerator(args.mixed_precision)
    setup_logging(accelerator)
    console = Console()
    sets, origins = load_eval_sets(args)
    names = [training_name(path) for path in args.model]
    names = [n if names.count(n) == 1 else f"{n} ({Path(p).resolve().name})" for n, p in zip(names, args.model)]
    report = {"split": args.split, "datasets": list(sets), "models": [], "cross_lingual_f1": {}}
    for name, path in zip(names, args.model):
        results = evaluate_model(path, sets, origins, args, accelerator)
        mean_f1 = sum(r["f1"] for r in results.values()) / len(results)
        report["models"].append({"name": name, "path": str(path), "results": results, "mean_f1": mean_f1})
        report["cross_lingual_f1"][name] = {**{s: r["f1"] for s, r in results.items()}, "mean": mean_f1}
        if accelerator.is_main_process:
            console.print(language_table(results, f"{name} ({path}), {args.split}"))
            if args.error_analysis:
                print_analysis(console, name, results)
    if accelerator.is_main_process:
        console.print(cross_lingual_table(report["cross_lingual_f1"], f"Cross-lingual F1, {args.split}"))
        if args.markdown:
            print(matrix_markdown(report["cross_lingual_f1"]))
        if args.output:
            write_json(Path(args.output), report)
            console.print(f"wrote {args.output}", soft_wrap=True)
        if args.html:  # one run's learning curves fit one page: those of the model when it is the only one
            curves = load_training_metrics(args.model[0]) if len(args.model) == 1 else None
            write_html(Path(args.html), training=curves, evaluation=report, title=f"ner_accel evaluation, {args.split}")
            console.print(f"wrote {args.html}", soft_wrap=True)
    accelerator.wait_for_everyone()
    end_accelerator(accelerator)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 0 on success, 2 on bad input (one line on stderr)."""
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
