"""F1 per language of ner_accel configurations next to the seed's Trainer recipe: the book's cross-lingual runs.

Run it from a frozen copy of the code (other work in the checkout never reaches a run), one job at a time:
    git clone -q /work/main /work/snap-ml && cd /work/snap-ml && export PYTHONPATH=$PWD/src
    MODEL=$(python benchmarks/shared_models.py)   # multilingual-e5-small, converted once per machine

Trials (train on PAN-X de, 8,000 sentences, 1 epoch, 3 seeds; F1 on de, fr and en validation, 10,000 each):
    python benchmarks/multilingual.py --model $MODEL --train-languages de --train-samples 8000 --epochs 1 \
        --seeds 42 43 44 --threads 2 --output benchmarks/cpu_results/e5-trials.json --configs trainer seed_recipe \
        lr1e-4="--learning-rate 1e-4" lr2e-4="--learning-rate 2e-4" warmup="--warmup-ratio 0.1" \
        llrd="--layer-lr-decay 0.9" freeze="--freeze-word-embeddings"
The book's experiments (full training sets, 3 epochs): fine-tune on de, then on de+fr and de+fr+en:
    python benchmarks/multilingual.py --model $MODEL --train-languages de --epochs 3 --configs trainer default
    python benchmarks/multilingual.py --model $MODEL --train-languages de fr --epochs 3 --configs trainer default
    python benchmarks/multilingual.py --model $MODEL --train-languages de fr en --epochs 3 --configs trainer default

Configurations (--configs), each trained and scored once per seed on the same sentences:
  trainer         the seed notebook's Trainer recipe (trainer_baseline.seed_recipe: DataCollatorForTokenClassification,
                  random batches, batch 24, lr 5e-5, weight decay 0.01, linear schedule, the seed's compute_metrics)
                  on the training languages concatenated, scored on each evaluation language; its own process
  NAME="FLAGS"    python -m ner_accel.train with these extra flags, then one python -m ner_accel.evaluate on every
                  evaluation language (the cross-lingual matrix); presets: seed_recipe = "--recipe seed",
                  default = "" (ner_accel's defaults)
Runs go seed by seed (every configuration for the first seed, then the next), so a cut-short job is still paired.
ner_accel.train's own end-of-epoch evaluation only logs; it is cut to --train-eval-samples sentences, and every F1
reported comes from ner_accel.evaluate on the full validation sets (or --eval-samples of each, said in the table).

Writes --output (JSON: every run with its configuration, flags, languages, sentences, epochs, seed, F1 per language
and their mean, wall times and the code's commit; a summary per configuration; paired differences by seed against
trainer and seed_recipe) after every run, and the same as markdown beside it. --resume keeps the runs of the same
workload already in --output. Wall times are the machine's as it was (shared CPUs): notes, not a benchmark.
Run as a file it puts the checkout's root and src/ first on the path; `python -m benchmarks.multilingual` (from the
checkout's root) needs ner_accel installed or PYTHONPATH=src.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.machine import describe, one_line
from benchmarks.shared_models import SHARED, multilingual_e5_small
from benchmarks.trainer_baseline import seed_recipe

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"seed_recipe": "--recipe seed", "default": ""}
TRAINER = "trainer"
REFERENCES = (TRAINER, "seed_recipe")  # paired differences are taken against each of these present


def parse_configs(items: list[str]) -> dict[str, str | None]:
    """NAME=FLAGS, a preset name, or trainer (flags None) -> {name: flags}."""
    configs: dict[str, str | None] = {}
    for item in items:
        name, given, flags = item.partition("=")
        if not given:
            if name != TRAINER and name not in PRESETS:
                raise SystemExit(f'--configs {item}: unknown preset; give NAME="FLAGS" or one of trainer, '
                                 f"{', '.join(PRESETS)}")  # fmt: skip
            flags = None if name == TRAINER else PRESETS[name]
        elif name == TRAINER:
            raise SystemExit("--configs trainer takes no flags: it is the seed recipe as the notebook runs it")
        if name in configs:
            raise SystemExit(f"--configs: {name} given twice")
        configs[name] = flags
    return configs


# ---------------------------------------------------------------------------------------------------------------
# One run of each kind, in its own process


def child_env(args, scratch: Path) -> dict:
    """This checkout's src/ first on the path, the thread count, one tokenization cache for the whole job."""
    env = dict(os.environ, HF_DATASETS_CACHE=str(scratch / "hf-cache"), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env["TOKENIZERS_PARALLELISM"] = "false"
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def call(argv: list[str], env: dict, log: Path) -> float:
    """Run a command with its output in log; its wall time, or exit with the log's tail when it fails."""
    start = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(argv, env=env, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{shlex.join(argv)}\nfailed with exit code {done.returncode}:\n{tail}")
    return time.perf_counter() - start


def run_ner_accel(args, flags: str, seed: int, scratch: Path, name: str) -> dict:
    """ner_accel.train with the extra flags, then ner_accel.evaluate on every evaluation language."""
    env, output_dir = child_env(args, scratch), scratch / "runs"
    train = [sys.executable, "-m", "ner_accel.train", "--model", args.model, "--data-dir", *args.train_dirs]
    train += ["--num-train-epochs", str(args.epochs), "--per-device-train-batch-size", str(args.batch_size)]
    train += ["--seed", str(seed), "--mixed-precision", args.mixed_precision, "--output-dir", str(output_dir)]
    train += ["--run-name", name, "--overwrite", "--max-eval-samples", str(args.train_eval_samples)]
    train += ["--max-train-samples", str(args.train_samples)] if args.train_samples else []
    train += ["--language-fractions", *map(str, args.language_fractions)] if args.language_fractions else []
    train += shlex.split(flags)
    train_s = call(train, env, scratch / f"{name}.train.log")
    resolved = json.loads((output_dir / name / "train_config.json").read_text())
    # Scored as the run decodes (ner_accel's default Viterbi; --recipe seed's argmax)
    eval_s, results = evaluate_model(args, env, output_dir / name, scratch, name, resolved["decode"])
    shutil.rmtree(output_dir / name / "checkpoints")  # 1 GB a run for e5-small; the model stays for comparisons
    return dict(
        results=results,
        f1={language: results[language]["f1"] for language in args.eval_languages},
        eval_sentences={language: results[language]["sentences"] for language in args.eval_languages},
        precision=resolved["mixed_precision"],
        decode=resolved["decode"],
        hyper_parameters={key: resolved[key] for key in HYPER_PARAMETERS},
        train_s=train_s,
        eval_s=eval_s,
    )


def evaluate_model(args, env: dict, model: Path, scratch: Path, name: str, decode: str) -> tuple:
    """ner_accel.evaluate of a model on every evaluation language: (seconds, results per language)."""
    report = scratch / f"{name}.{decode}.eval.json"
    evaluate = [sys.executable, "-m", "ner_accel.evaluate", "--model", str(model), "--data-dir", *args.eval_dirs]
    evaluate += ["--mixed-precision", args.mixed_precision, "--output", str(report), "--decode", decode]
    evaluate += ["--max-eval-samples", str(args.eval_samples)] if args.eval_samples else []
    seconds = call(evaluate, env, scratch / f"{name}.{decode}.eval.log")
    return seconds, json.loads(report.read_text())["models"][0]["results"]


def paired(args, first: dict, second: dict) -> dict:
    """second against first on the same sentences, per evaluation language (F1 difference, interval, p-value)."""
    from ner_accel.data.readers import find_split_file, read_split
    from ner_accel.evaluation.intervals import paired_comparison

    comparisons = {}
    for language, directory in zip(args.eval_languages, args.eval_dirs):
        gold = [s["tags"] for s in read_split(find_split_file(Path(directory), "validation"))][: args.eval_samples]
        found = paired_comparison(gold, first[language]["predicted"], second[language]["predicted"])
        comparisons[language] = {key: found[key] for key in ("difference", "interval", "p_value")}
    return comparisons


def pair_with_reference(args, seed_runs: list[dict]) -> None:
    """--compare: each ner_accel run of one seed against the seed's Trainer (or seed_recipe) run, same sentences."""
    reference = next((r for r in seed_runs if r["config"] in REFERENCES and "results" in r), None)
    for run in seed_runs:
        if reference is not None and run is not reference and run["flags"] is not None and "results" in run:
            pairs = {reference["config"]: paired(args, reference["results"], run["results"])}
            run["paired_with"] = {**run.get("paired_with", {}), **pairs}


HYPER_PARAMETERS = ("learning_rate", "weight_decay", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
                    "layer_lr_decay", "freeze_word_embeddings", "group_by_length", "max_grad_norm")  # fmt: skip


def run_trainer(args, seed: int, scratch: Path, name: str) -> dict:
    """The seed recipe in a fresh process of this script (--trainer-worker), as bench_train.py runs it."""
    result = scratch / f"{name}.json"
    worker = [sys.executable, str(Path(__file__).resolve()), "--trainer-worker", str(result), "--seed", str(seed)]
    worker += ["--model", args.model, "--data-root", args.data_root, "--epochs", str(args.epochs)]
    worker += ["--train-languages", *args.train_languages, "--eval-languages", *args.eval_languages]
    worker += ["--batch-size", str(args.batch_size), "--mixed-precision", args.mixed_precision]
    worker += ["--train-samples", str(args.train_samples)] if args.train_samples else []
    worker += ["--eval-samples", str(args.eval_samples)] if args.eval_samples else []
    worker += ["--language-fractions", *map(str, args.language_fractions)] if args.language_fractions else []
    worker += ["--threads", str(args.threads)] if args.threads else []
    worker += ["--save-model", str(scratch / "runs" / name / "model")] if args.compare else []
    call(worker, child_env(args, scratch), scratch / f"{name}.log")
    done = json.loads(result.read_text())
    f1 = {language: done["f1_per_set"][language] for language in args.eval_languages}
    extra = {}
    if args.compare:  # scored as ner_accel's runs are (every word, ner_accel.evaluate), to compare on equal terms
        # argmax: what the recipe's compute_metrics reads
        eval_s, results = evaluate_model(
            args, child_env(args, scratch), scratch / "runs" / name, scratch, name, "argmax"
        )
        extra = dict(f1_trainer_metrics=f1, evaluate_s=eval_s, results=results)
        f1 = {language: results[language]["f1"] for language in args.eval_languages}
    return dict(
        **extra,
        f1=f1,
        eval_sentences=done["eval_sentences_per_set"],
        train_sentences_seen=done["train_sentences"],
        precision=done["precision"],
        train_s=done["train_s"],
        eval_s=done["eval_s"],
    )


def trainer_worker(args) -> None:
    """In this process: the seed recipe on the training languages, scored on each evaluation language."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = seed_recipe(
        args.model, args.train_dirs, args.eval_dirs, train_samples=args.train_samples, eval_samples=args.eval_samples,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, mixed_precision=args.mixed_precision,
        fractions=args.language_fractions, save_to=args.save_model,
    )  # fmt: skip
    Path(args.trainer_worker).write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# The job: every configuration for each seed; summary, JSON and markdown


def workload(args) -> dict:
    """What every run of this job shares; --resume reuses only runs of an identical workload."""
    return dict(
        model=Path(args.model).name,
        train_languages=args.train_languages,
        train_samples=args.train_samples,
        language_fractions=args.language_fractions,
        train_sentences=args.train_sentences,
        epochs=args.epochs,
        batch_size=args.batch_size,
        eval_languages=args.eval_languages,
        eval_samples=args.eval_samples,
        mixed_precision=args.mixed_precision,
    )


def count_train_sentences(args) -> dict[str, int]:
    """Sentences per training language after --train-samples/--language-fractions (ner_accel's own selection)."""
    from ner_accel.data.readers import read_conll

    counts = {}
    for index, (language, directory) in enumerate(zip(args.train_languages, args.train_dirs)):
        total = len(read_conll(Path(directory) / "train.conll"))
        fraction = args.language_fractions[index] if args.language_fractions else 1.0
        total = max(1, int(fraction * total)) if fraction < 1 else total
        counts[language] = min(total, args.train_samples or total)
    return counts


def snapshot() -> dict:
    """The commit the code ran from, and whether the files a run uses differ from it."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "src", "benchmarks/*.py")
    return dict(commit=git("rev-parse", "HEAD") or "unknown", uncommitted=changed.splitlines())


def mean_sd(values: list[float]) -> dict:
    return dict(mean=statistics.fmean(values), sd=statistics.stdev(values) if len(values) > 1 else 0.0, n=len(values))


def summarise(runs: list[dict], columns: list[str]) -> dict:
    """Per configuration: mean and sd over seeds per language and of the mean; paired differences by seed."""
    summary = {}
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = {r["seed"]: r for r in runs if r["config"] == config}
        entry = {"flags": next(iter(mine.values()))["flags"], "seeds": sorted(mine)}
        entry["f1"] = {c: mean_sd([mine[s]["f1"][c] for s in sorted(mine)]) for c in columns}
        for reference in REFERENCES:
            theirs = {r["seed"]: r for r in runs if r["config"] == reference}
            seeds = sorted(set(mine) & set(theirs))
            if reference == config or not seeds:
                continue
            paired = {"seeds": seeds}
            for c in columns:
                deltas = [mine[s]["f1"][c] - theirs[s]["f1"][c] for s in seeds]
                paired[c] = {**mean_sd(deltas), "deltas": deltas}
            entry[f"vs_{reference}"] = paired
        summary[config] = entry
    return summary


def spread(stats: dict) -> str:
    """' ± sd' over two or more seeds; one seed has no spread to show."""
    return f" ± {stats['sd']:.4f}" if stats["n"] > 1 else " (1 seed)"


def markdown(report: dict) -> str:
    w, columns = report["workload"], report["columns"]
    sentences = ", ".join(f"{n:,} {language}" for language, n in w["train_sentences"].items())
    evaluated = f"first {w['eval_samples']:,}" if w["eval_samples"] else "all"
    counts = Counter(run["commit"] for run in report["runs"])
    commits = "runs from commit " + ", ".join(f"{c[:12]} ({n} runs)" for c, n in counts.items()) if counts else "-"
    lines = [
        f"### {w['model']}: trained on {'+'.join(w['train_languages'])} ({sentences} sentences), {w['epochs']} "
        f"epoch(s), batch {w['batch_size']}; F1 on {', '.join(w['eval_languages'])} validation ({evaluated} "
        "sentences of each)",
        "",
        f"Code: {commits}"
        + (" (this invocation's checkout had uncommitted changes)" if report["snapshot"]["uncommitted"] else "")
        + f". Machine: {one_line(report['machine'])}; {report['threads'] or 'default'} torch thread(s) per run, "
        "shared with other jobs (wall times are notes, not a benchmark). "
        f"Precision: {', '.join(sorted({r['precision'] for r in report['runs']}))}.",
        "",
        "#### Every run",
        "",
        "| config | flags | seed | " + " | ".join(columns) + " | train s | eval s | wall s |",
        "|---|---|---|" + "---|" * len(columns) + "---|---|---|",
    ]
    for r in report["runs"]:
        flags = "(Trainer)" if r["flags"] is None else f"`{r['flags']}`" if r["flags"] else "(defaults)"
        lines.append(
            f"| {r['config']} | {flags} | {r['seed']} | " + " | ".join(f"{r['f1'][c]:.4f}" for c in columns)
            + f" | {r['train_s']:,.0f} | {r['eval_s']:,.0f} | {r['wall_s']:,.0f} |"
        )  # fmt: skip
    lines += [
        "",
        "#### Per configuration: F1 mean ± sd over seeds",
        "",
        "| config | seeds | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for config, s in report["summary"].items():
        cells = " | ".join(f"{s['f1'][c]['mean']:.4f}{spread(s['f1'][c])}" for c in columns)
        lines.append(f"| {config} | {', '.join(map(str, s['seeds']))} | {cells} |")
    for reference in REFERENCES:
        rows = [(config, s[f"vs_{reference}"]) for config, s in report["summary"].items() if f"vs_{reference}" in s]
        if not rows:
            continue
        lines += [
            "",
            f"#### Paired differences against {reference}, by seed: mean ± sd (each seed's difference)",
            "",
            "| config | seeds | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for config, p in rows:
            cells = " | ".join(
                f"{p[c]['mean']:+.4f}{spread(p[c])} ({', '.join(f'{d:+.4f}' for d in p[c]['deltas'])})" for c in columns
            )
            lines.append(f"| {config} | {', '.join(map(str, p['seeds']))} | {cells} |")
    pairs = [(r, other, c) for r in report["runs"] for other, c in r.get("paired_with", {}).items()]
    if pairs:
        lines += [
            "",
            "#### Paired on the same sentences (ner_accel.evaluate's paired bootstrap and approximate randomisation)",
            "",
            "Each cell: F1 difference (config - against), its 95 % interval, p-value.",
            "",
            "| config | against | seed | " + " | ".join(report["workload"]["eval_languages"]) + " |",
            "|---|---|---|" + "---|" * len(report["workload"]["eval_languages"]),
        ]
        for r, other, c in pairs:
            cells = " | ".join(
                f"{c[lang]['difference']:+.4f} [{c[lang]['interval'][0]:+.4f}, {c[lang]['interval'][1]:+.4f}] "
                f"p={c[lang]['p_value']:.3f}"
                for lang in report["workload"]["eval_languages"]
            )
            lines.append(f"| {r['config']} | {other} | {r['seed']} | {cells} |")
    return "\n".join(lines) + "\n"


def strip_results(run: dict) -> dict:
    """A run without its per-sentence results (kept in memory for the pairings; gigabytes in JSON)."""
    return {key: value for key, value in run.items() if key != "results"}


def write_report(args, runs: list[dict], started: dict) -> dict:
    columns = [*args.eval_languages, "mean"]
    report = dict(
        workload=workload(args),
        columns=columns,
        snapshot=started["snapshot"],
        machine=started["machine"],
        threads=args.threads,
        configs=args.configs,
        seeds=args.seeds,
        summary=summarise(runs, columns),
        runs=[strip_results(run) for run in runs],
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1))
    output.with_suffix(".md").write_text(markdown(report))
    return report


def previous_runs(args) -> list[dict]:
    """With --resume: every run already in --output, if of this workload (configurations not asked for again
    stay in the report: a cut-short candidate keeps the seeds it has). Each run records its own commit."""
    output = Path(args.output)
    if not args.resume or not output.is_file():
        return []
    old = json.loads(output.read_text())
    if old["workload"] != workload(args):
        raise SystemExit(f"--resume: {output} holds another workload ({old['workload']}); pass another --output")
    for run in old["runs"]:
        if args.configs.get(run["config"], run["flags"]) != run["flags"]:
            raise SystemExit(f"--resume: {run['config']} ran with flags {run['flags']!r} in {output}; "
                             f"give the new flags another name")  # fmt: skip
    args.configs = {**{r["config"]: r["flags"] for r in old["runs"]}, **args.configs}  # the report lists them all
    return old["runs"]


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Workload
    parser.add_argument("--model", help="model directory (default: multilingual-e5-small via shared_models.py)")
    parser.add_argument("--data-root", default=str(SHARED / "data" / "panx"), help="holds one directory a language")
    parser.add_argument("--train-languages", nargs="+", default=["de"])
    parser.add_argument("--eval-languages", nargs="+", default=["de", "fr", "en"])
    parser.add_argument("--train-samples", type=int, help="first N training sentences of each language (none: all)")
    parser.add_argument("--language-fractions", type=float, nargs="+", help="seeded fraction of each language")
    parser.add_argument("--eval-samples", type=int, help="first N validation sentences of each language (none: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--mixed-precision", choices=["auto", "no", "bf16"], default="auto")
    # Runs
    parser.add_argument("--configs", nargs="+", default=[TRAINER, "seed_recipe"], help='trainer, presets, NAME="FLAGS"')
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--threads", type=int, help="torch threads per run (OMP_NUM_THREADS; default torch's)")
    parser.add_argument("--train-eval-samples", type=int, default=500, help="ner_accel.train's own evaluation (logs)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "multilingual.json"))
    parser.add_argument("--resume", action="store_true", help="keep the runs of this workload already in --output")
    parser.add_argument("--scratch", help="where runs are written and removed (default: a temporary directory)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="score the Trainer's model with ner_accel.evaluate too, and pair each "
        "configuration with it (or seed_recipe) on the same sentences: F1 difference, 95%% interval, p-value",
    )
    parser.add_argument(
        "--decodes",
        nargs="+",
        default=[],
        choices=["argmax", "viterbi"],
        help="also evaluate each ner_accel model with these decodings besides its own (the default's viterbi, the "
        "seed recipe's argmax): a run CONFIG+argmax, paired with CONFIG",
    )
    parser.add_argument("--keep-models", help="move each run's model/ here (default: removed after its seed)")
    parser.add_argument("--save-model", help=argparse.SUPPRESS)
    # Internal: the Trainer recipe in this process
    parser.add_argument("--trainer-worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = str(multilingual_e5_small())
    args.model = os.path.abspath(args.model) if os.path.isdir(args.model) else args.model  # children run in ROOT
    args.data_root = os.path.abspath(args.data_root)
    args.train_dirs = [str(Path(args.data_root) / language) for language in args.train_languages]
    args.eval_dirs = [str(Path(args.data_root) / language) for language in args.eval_languages]
    if args.trainer_worker:
        return trainer_worker(args)
    args.configs = asked = parse_configs(args.configs)
    args.train_sentences = count_train_sentences(args)
    started = dict(snapshot=snapshot(), machine=describe())
    runs = previous_runs(args)
    report = write_report(args, runs, started)
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        for seed in args.seeds:
            for config, flags in asked.items():
                if any(r["config"] == config and r["seed"] == seed for r in runs):
                    continue
                print(f"[multilingual] {time.strftime('%H:%M:%S')} seed {seed}: {config}", file=sys.stderr, flush=True)
                start, name = time.perf_counter(), f"{config}-{seed}"
                if flags is None:
                    result = run_trainer(args, seed, Path(scratch), name)
                    if result.pop("train_sentences_seen") != sum(args.train_sentences.values()):
                        raise SystemExit(f"{name}: the Trainer recipe saw other training sentences than ner_accel")
                else:
                    result = run_ner_accel(args, flags, seed, Path(scratch), name)
                found = {config: result}
                model = Path(scratch) / "runs" / name
                for decode in [d for d in args.decodes if d != result.get("decode")] if flags is not None else []:
                    eval_s, results = evaluate_model(
                        args, child_env(args, Path(scratch)), model, Path(scratch), name, decode
                    )
                    derived = {**result, "results": results, "eval_s": eval_s}
                    derived["f1"] = {language: results[language]["f1"] for language in args.eval_languages}
                    derived["paired_with"] = {config: paired(args, result["results"], results)}
                    found[f"{config}+{decode}"] = derived
                for derived_config, derived in found.items():
                    derived["f1"]["mean"] = statistics.fmean(derived["f1"][c] for c in args.eval_languages)
                    runs.append(
                        dict(
                            config=derived_config,
                            flags=flags,
                            seed=seed,
                            train_languages=args.train_languages,
                            train_sentences=args.train_sentences,
                            epochs=args.epochs,
                            **derived,
                            wall_s=time.perf_counter() - start,
                            commit=started["snapshot"]["commit"],
                        )
                    )
                    print(f"[multilingual] {json.dumps(strip_results(runs[-1]))}", file=sys.stderr, flush=True)
                if args.keep_models and model.is_dir():
                    shutil.move(str(model), str(Path(args.keep_models) / name))
                report = write_report(args, runs, started)
            if args.compare:  # once the seed's runs are all in, whatever order they ran in
                pair_with_reference(args, [r for r in runs if r["seed"] == seed])
                report = write_report(args, runs, started)
            shutil.rmtree(Path(scratch) / "runs", ignore_errors=True)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
