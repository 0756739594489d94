"""What dropping attention dropout costs in F1: torch's varlen_attn (FlashAttention-2, --attention ner_accel_varlen)
has none, so a model with attention dropout trains by the bucketed path, and only a model without it would train by
varlen. This trains the same model with attention_probs_dropout_prob as it ships (0.1 for XLM-R and e5) and at 0,
paired by seed, with the unpadded path on CPU (the packed model is the same model whatever the kernel).

Run it from a frozen copy of the code, alone on the machine (about 30-60 CPU-minutes on 2 cores):
    git clone -q /work/main /work/snap-ad && cd /work/snap-ad && export PYTHONPATH=$PWD/src
    python benchmarks/attention_dropout.py --seeds 42 43 44 --threads 2 \
        --output benchmarks/cpu_results/e5-attention-dropout.json
Workload (benchmarks/multilingual.py, its runs and JSON): multilingual-e5-small (shared_models.py), PAN-X de,
the first 8,000 training sentences, 1 epoch, batch 24, ner_accel's defaults; F1 from ner_accel.evaluate on the de
validation set (--eval-languages for more). The model without attention dropout is the same directory with
config.json's attention_probs_dropout_prob set to 0 (the weights linked, not copied).

Writes --output (both variants' runs, per seed, and the paired difference of F1: without minus with, per seed,
mean and standard deviation) and the same as markdown beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks import multilingual
from benchmarks.shared_models import multilingual_e5_small

ROOT = Path(__file__).resolve().parents[1]


def without_attention_dropout(model: Path, directory: Path) -> Path:
    """`model` with attention_probs_dropout_prob 0 in its config, its other files linked."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in model.iterdir():
        if file.name != "config.json":
            (directory / file.name).symlink_to(file.resolve())
    config = json.loads((model / "config.json").read_text())
    config["attention_probs_dropout_prob"] = 0.0
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory


def paired(runs: dict[str, list[dict]], languages: list[str]) -> dict:
    """Per language: F1 without minus with attention dropout, per seed, and their mean and standard deviation."""
    by_seed = {name: {run["seed"]: run["f1"] for run in found} for name, found in runs.items()}
    seeds = sorted(set(by_seed["with"]) & set(by_seed["without"]))
    result = {}
    for language in languages:
        differences = [by_seed["without"][s][language] - by_seed["with"][s][language] for s in seeds]
        result[language] = dict(
            seeds=seeds,
            differences=differences,
            mean=statistics.fmean(differences) if differences else None,
            sd=statistics.stdev(differences) if len(differences) > 1 else None,
            with_f1=[by_seed["with"][s][language] for s in seeds],
            without_f1=[by_seed["without"][s][language] for s in seeds],
        )
    return result


def markdown(report: dict) -> str:
    lines = ["| language | seed | F1 with attention dropout | F1 without | difference |", "|---|---|---|---|---|"]
    for language, found in report["paired"].items():
        for seed, with_f1, without_f1, difference in zip(
            found["seeds"], found["with_f1"], found["without_f1"], found["differences"]
        ):
            lines.append(f"| {language} | {seed} | {with_f1:.4f} | {without_f1:.4f} | {difference:+.4f} |")
        if found["mean"] is not None:
            sd = f" (sd {found['sd']:.4f})" if found["sd"] is not None else ""
            lines.append(f"| {language} | mean | | | {found['mean']:+.4f}{sd} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: multilingual-e5-small via shared_models.py)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-languages", nargs="+", default=["de"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "attention-dropout.json"))
    args = parser.parse_args(argv)
    model = Path(args.model or multilingual_e5_small()).resolve()
    output = Path(args.output)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        variants = {"with": model, "without": without_attention_dropout(model, Path(scratch) / model.name)}
        for name, directory in variants.items():
            report = multilingual.main(
                ["--model", str(directory), "--train-languages", "de", "--eval-languages", *args.eval_languages,
                 "--train-samples", str(args.train_samples), "--epochs", str(args.epochs), "--configs", "default",
                 "--seeds", *map(str, args.seeds), "--output", str(output.with_name(f"{output.stem}-{name}.json")),
                 *(["--threads", str(args.threads)] if args.threads else [])]
            )  # fmt: skip
            runs[name] = report["runs"]
    dropout = json.loads((model / "config.json").read_text()).get("attention_probs_dropout_prob")
    result = dict(model=str(model), attention_dropout=dropout, runs=runs, paired=paired(runs, args.eval_languages))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1))
    output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
