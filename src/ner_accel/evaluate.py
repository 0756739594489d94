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

from accelerate import Accelerator
from rich.console import Console

from .data.batching import SCORING_INPUTS, make_loader, pad_multiple
from .data.corpus import check_known_tags, source_names, subsample, to_dataset
from .data.encoding import encode_for_scoring
from .data.panx_hub import load_hub_panx
from .data.readers import (
    NESTED_SPANS,
    READ_HELP,
    TAG_SCHEMES,
    ReadOptions,
    check_data_dir,
    find_split_file,
    missing_split,
    read_split,
)
from .errors import UsageError, run_command
from .evaluation.analysis import error_analysis
from .evaluation.intervals import paired_comparison
from .evaluation.metrics import entity_metrics
from .evaluation.scoring import EvaluationSet, collect_predictions
from .inference.decoding import DECODINGS, DEFAULT_DECODING
from .inference.onnx_model import OnnxTokenClassifier, is_export
from .inference.windows import Windowing
from .modeling.loading import load_tokenizer, load_trained, sequence_limit
from .modeling.unpadding import UNPADDED
from .options.checks import check_values
from .options.parsing import CommandParser
from .reporting.console import (
    comparison_table,
    cross_lingual_table,
    language_table,
    matrix_markdown,
    print_analysis,
    setup_logging,
)
from .reporting.html_report import load_training_metrics, write_html
from .rundir.artifacts import CONFIG_FILE, MODEL_DIR
from .rundir.files import check_output_file, write_json
from .training.precision import end_accelerator, make_accelerator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser(
        "evaluate", __doc__, "--model DIR [DIR ...] (--data-dir DIR [DIR ...] | --languages LANG [LANG ...]) [options]"
    )
    # Models
    parser.add_argument(
        "--model", nargs="+", required=True,
        help="Run directories (with model/), model directories or ONNX exports (ner_accel.export).",
    )  # fmt: skip
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
    parser.add_argument("--token-column", help=READ_HELP["token_column"])
    parser.add_argument("--tag-column", help=READ_HELP["tag_column"])
    parser.add_argument("--annotator", help=READ_HELP["annotator"])
    parser.add_argument("--snap-spans", action="store_true", help=READ_HELP["snap_spans"])
    parser.add_argument("--nested-spans", default="refuse", choices=NESTED_SPANS, help=READ_HELP["nested_spans"])
    parser.add_argument("--max-eval-samples", type=int, help="Use only the first N sentences of each dataset.")
    parser.add_argument(
        "--max-length",
        type=int,
        help="Sub-tokens per window (default: the model's limit); longer sentences are "
        "tagged in overlapping windows, as by predict, so every word is scored.",
    )
    parser.add_argument("--overlap", type=int, help="Sub-tokens repeated between windows (default: a quarter).")
    parser.add_argument(
        "--decode",
        default=DEFAULT_DECODING,
        choices=DECODINGS,
        help="Tags from word probabilities: argmax, or viterbi (the best IOB2-valid sequence).",
    )
    parser.add_argument(
        "--compare",
        metavar="MODEL_B",
        help="A second model scored on the same sentences against the first "
        "(--model takes one then): F1 difference with its paired-bootstrap 95 %% interval and a p-value.",
    )
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
    if args.compare and len(args.model) != 1:
        raise UsageError(f"--compare {args.compare}: compares two models; pass one --model, not {len(args.model)}")
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
            sets[name], origins[name] = read_split(path, ReadOptions.of(args)), str(path)
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
    """Metrics, error analysis and every sentence's predicted tags of one model on each evaluation set."""
    directory = model_dir(path)
    tokenizer = load_tokenizer(str(directory), args.trust_remote_code)
    # An ONNX export (ner_accel.export) is scored by onnxruntime through the same loaders, windows and decoding.
    if is_export(directory):
        model = OnnxTokenClassifier(directory)
    else:
        model = load_trained(str(directory), args.trust_remote_code)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    # Every word is scored: a sentence longer than --max-length is tagged through the windows predict uses.
    windowing = Windowing.of(tokenizer, sequence_limit(tokenizer, args.max_length), args.overlap)
    pad_to = pad_multiple(accelerator.device, accelerator.mixed_precision)
    loaders = {}
    for name, sentences in sets.items():
        check_known_tags(sentences, labels, origins[name], "the model's labels")
        with accelerator.main_process_first():
            rows = encode_for_scoring(to_dataset(sentences, name), tokenizer, labels, windowing, f"{name}/{args.split}")
        loaders[name] = make_loader(
            rows,
            tokenizer,
            args.per_device_batch_size * accelerator.num_processes,
            seed=0,
            train=False,
            pad_to_multiple_of=pad_to,
            pack=model.config._attn_implementation == UNPADDED,
            columns=SCORING_INPUTS,
        )
    model, *prepared = accelerator.prepare(model, *loaders.values())
    results = {}
    for (name, sentences), loader in zip(sets.items(), prepared):
        evaluation = EvaluationSet(loader, [s["tags"] for s in sentences])
        predictions = collect_predictions(model, evaluation, accelerator, model.config.id2label, args.decode)
        words = [s["tokens"] for s in sentences]
        gold, predicted, losses = predictions.gold, predictions.predicted, predictions.losses
        results[name] = {
            **entity_metrics(gold, predicted),
            "sentences": len(gold),
            "analysis": error_analysis(words, gold, predicted, losses, labels, args.worst, args.top_tokens),
            "predicted": predicted,
        }
    accelerator.free_memory()
    return results


def compare(report: dict, sets: dict[str, list[dict]]) -> dict:
    """The second model against the first on each set, paired on the same sentences (intervals.paired_comparison)."""
    first, second = report["models"]
    return {
        name: {"first": first["name"], "second": second["name"], **paired_comparison(
            [s["tags"] for s in sentences], first["results"][name]["predicted"], second["results"][name]["predicted"]
        )}
        for name, sentences in sets.items()
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    """Evaluate every model on every set; print the tables and write the JSON on the main process."""
    accelerator = make_accelerator(args.mixed_precision)
    setup_logging(accelerator)
    console = Console()
    sets, origins = load_eval_sets(args)
    paths = args.model + ([args.compare] if args.compare else [])
    names = [training_name(path) for path in paths]
    names = [n if names.count(n) == 1 else f"{n} ({Path(p).resolve().name})" for n, p in zip(names, paths)]
    report = {"split": args.split, "decode": args.decode, "datasets": list(sets), "models": [], "cross_lingual_f1": {}}
    for name, path in zip(names, paths):
        results = evaluate_model(path, sets, origins, args, accelerator)
        mean_f1 = sum(r["f1"] for r in results.values()) / len(results)
        report["models"].append({"name": name, "path": str(path), "results": results, "mean_f1": mean_f1})
        report["cross_lingual_f1"][name] = {**{s: r["f1"] for s, r in results.items()}, "mean": mean_f1}
        if accelerator.is_main_process:
            console.print(language_table(results, f"{name} ({path}), {args.split}"))
            if args.error_analysis:
                print_analysis(console, name, results)
    if args.compare:
        report["comparison"] = compare(report, sets)
    if accelerator.is_main_process:
        console.print(cross_lingual_table(report["cross_lingual_f1"], f"Cross-lingual F1, {args.split}"))
        if args.compare:
            console.print(comparison_table(report["comparison"], f"{names[1]} against {names[0]}, {args.split}"))
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
