"""Batch inference on CPU: transformers' pipeline against ner_accel's predict path on torch and on onnxruntime.

One run, every configuration in its own process (peak memory is the process's), interleaved over --rounds:
    MODEL=$(python benchmarks/shared_models.py)
    python -m ner_accel.train --model $MODEL --data-dir ../shared/data/panx/de --max-train-samples 2000 \
        --num-train-epochs 1 --recipe small-encoder --output-dir /tmp/bench --run-name e5-de
    python -m ner_accel.export --model /tmp/bench/e5-de --output /tmp/bench/e5-de-onnx
    python -m ner_accel.export --model /tmp/bench/e5-de --output /tmp/bench/e5-de-int8 --quantize int8
    python benchmarks/bench_inference.py --run /tmp/bench/e5-de --onnx /tmp/bench/e5-de-onnx \
        --int8 /tmp/bench/e5-de-int8 --data ../shared/data/panx/de/validation.conll \
        --output benchmarks/cpu_results/inference-e5-de.json

Configurations:
  pipeline     transformers.pipeline("token-classification", aggregation_strategy="first") on the texts, its
               default batch size (1); on long documents with stride=128 (without it the pipeline cannot take a
               text past the model's 512 positions)
  torch_fp32   ner_accel.inference.Tagger (what predict runs): PAN-X word splitting, windows sorted by length into
               batches of 64 (a long document's windows batched with the rest), the unpadded torch forward, fp32
  torch_bf16   the same at bf16 under autocast, only where the CPU has native bf16 (else listed as skipped, why)
  onnx_fp32    the same Tagger on the fp32 export (onnxruntime, CPU provider)
  onnx_int8    the same Tagger on the INT8 export
Workloads: `sentences` (the first --sentences sentences of --data, one document each, words joined by spaces) and
`long` (the same sentences concatenated --per-document at a time: documents of several windows). F1 is the
entity-level micro F1 of each configuration's character spans against the gold spans of the joined words (seqeval's
exact match, on characters, so the pipeline is scored on the same terms). Real tokens: the documents' sub-tokens
(no special tokens, no padding), the same count for every configuration. Threads: --threads for torch and
onnxruntime alike. Writes --output (JSON: the machine, the command, every run) and the markdown table beside it.
Run as a file it puts the checkout's root and src/ first on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.machine import describe, one_line

CONFIGS = ("pipeline", "torch_fp32", "torch_bf16", "onnx_fp32", "onnx_int8")
WORKLOADS = ("sentences", "long")
BASELINE, REFERENCE = "pipeline", "torch_fp32"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------
# Documents and gold spans


def documents(path: str, sentences: int, per_document: int) -> tuple[list[str], list[set]]:
    """Texts (words joined by single spaces) and each text's gold entities as (type, start, end) character spans."""
    from ner_accel.data.readers import read_split
    from ner_accel.inference.entities import extract_entities

    rows = read_split(Path(path))[:sentences]
    texts, gold = [], []
    for first in range(0, len(rows), per_document):
        words, tags = [], []
        for row in rows[first : first + per_document]:
            words += row["tokens"]
            tags += row["tags"]
        starts, position = [], 0
        for word in words:
            starts.append(position)
            position += len(word) + 1
        texts.append(" ".join(words))
        gold.append({(kind, starts[a], starts[b - 1] + len(words[b - 1])) for kind, a, b in extract_entities(tags)})
    return texts, gold


def span_f1(gold: list[set], found: list[set]) -> dict:
    """Micro precision, recall and F1 of exact (type, start, end) matches, overall and per type."""
    kinds = sorted({k for spans in gold + found for k, _, _ in spans})
    table = {}
    for kind in [None, *kinds]:
        pick = (lambda spans: spans) if kind is None else (lambda spans: {s for s in spans if s[0] == kind})  # noqa: B023
        correct = sum(len(pick(g) & pick(f)) for g, f in zip(gold, found))
        predicted, true = sum(len(pick(f)) for f in found), sum(len(pick(g)) for g in gold)
        precision, recall = correct / max(predicted, 1), correct / max(true, 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table["overall" if kind is None else kind] = {"precision": precision, "recall": recall, "f1": f1}
    return table


# ---------------------------------------------------------------------------------------------------------------
# One configuration on one workload (its own process)


def tag_pipeline(model_dir: str, texts: list[str], long: bool) -> tuple[list[set], float]:
    from transformers import pipeline

    tagger = pipeline("token-classification", model=model_dir, aggregation_strategy="first", device="cpu")
    options = {"stride": min(128, tagger.tokenizer.model_max_length // 4)} if long else {}  # 128 on 512 positions
    tagger(texts[:8], **options)  # warm-up, as for the others
    started = time.perf_counter()
    found = [{(e["entity_group"], e["start"], e["end"]) for e in tagger(text, **options)} for text in texts]
    return found, time.perf_counter() - started


def tag_ner_accel(model_dir: str, texts: list[str], bf16: bool, batch_size: int, chunk: int) -> tuple[list[set], float]:
    import contextlib

    import torch

    from ner_accel.inference.tagger import Tagger

    tagger = Tagger.load(model_dir, batch_size=batch_size, device="cpu")
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        tagger.tag(texts[:8])  # warm-up: first-call allocations, onnxruntime's arena
        started = time.perf_counter()
        found = []
        for first in range(0, len(texts), chunk):  # as predict reads --input: --chunk-size documents at a time
            found += [
                {(e["type"], e["start"], e["end"]) for e in entities}
                for entities in tagger.tag(texts[first : first + chunk])
            ]
    return found, time.perf_counter() - started


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    texts, gold = documents(args.data, args.sentences, args.per_document if args.workload == "long" else 1)
    model = {"pipeline": args.run_model, "torch_fp32": args.run_model, "torch_bf16": args.run_model,
             "onnx_fp32": args.onnx, "onnx_int8": args.int8}[args.worker]  # fmt: skip
    loaded = time.perf_counter()
    if args.worker == "pipeline":
        found, seconds = tag_pipeline(model, texts, args.workload == "long")
    else:
        found, seconds = tag_ner_accel(model, texts, args.worker == "torch_bf16", args.batch_size, args.chunk_size)
    result = {
        "config": args.worker,
        "workload": args.workload,
        "documents": len(texts),
        "seconds": seconds,
        "process_s": time.perf_counter() - loaded,
        "documents_per_s": len(texts) / seconds,
        "f1": span_f1(gold, found),
        "peak_rss_mib": peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }
    Path(args.result).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# Orchestration


def real_tokens(model_dir: str, texts: list[str]) -> int:
    """The documents' sub-tokens as ner_accel tokenizes them (every word on its own, no special tokens)."""
    from ner_accel.inference.windows import word_pieces
    from ner_accel.inference.words import split_words
    from ner_accel.modeling.loading import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    words = [[text[s:e] for s, e in split_words(text)] for text in texts]
    return sum(len(piece) for doc in word_pieces(tokenizer, words) for piece in doc)


def spawn(args, config: str, workload: str, result: Path) -> dict:
    argv = [sys.executable, __file__, "--worker", config, "--workload", workload, "--result", str(result),
            "--run", args.run, "--onnx", args.onnx or "", "--int8", args.int8 or "", "--data", args.data,
            "--sentences", str(args.sentences), "--per-document", str(args.per_document), "--threads",
            str(args.threads), "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(argv, check=True, env=env)
    return json.loads(result.read_text())


def best_runs(runs: list[dict]) -> dict:
    """(config, workload) -> its fastest round (the machine is shared: the least disturbed round)."""
    best = {}
    for run in runs:
        key = (run["config"], run["workload"])
        if key not in best or run["seconds"] < best[key]["seconds"]:
            best[key] = run
    return best


def markdown(report: dict) -> str:
    lines = [f"Machine: {report['machine_line']}; {report['threads']} threads. Command: `{report['command']}`", ""]
    for workload in WORKLOADS:
        rows = {c: r for (c, w), r in report["best"].items() if w == workload}
        if not rows:
            continue
        base, ref = rows.get(BASELINE), rows.get(REFERENCE)
        docs = next(iter(rows.values()))["documents"]
        lines += [f"**{workload}** ({docs} documents, {report['real_tokens'][workload]:,} real tokens)", "",
                  "| configuration | documents/s | real tokens/s | x pipeline | x torch fp32 | peak memory MiB | F1 | "
                  "F1 - torch fp32 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for config in CONFIGS:
            if config in report["skipped"]:
                lines.append(f"| {config} | skipped: {report['skipped'][config]} | | | | | | |")
                continue
            if config not in rows:
                continue
            r = rows[config]
            tokens = report["real_tokens"][workload] / r["seconds"]
            x_base = f"{base['seconds'] / r['seconds']:.2f}" if base else ""
            x_ref = f"{ref['seconds'] / r['seconds']:.2f}" if ref else ""
            delta = f"{r['f1']['overall']['f1'] - ref['f1']['overall']['f1']:+.4f}" if ref else ""
            lines.append(
                f"| {config} | {r['documents_per_s']:.1f} | {tokens:,.0f} | {x_base} | {x_ref} | {r['peak_rss_mib']:.0f} "
                f"| {r['f1']['overall']['f1']:.4f} | {delta} |"
            )
        lines.append("")
    for name, sizes in report["exports"].items():
        lines.append(f"- {name}: {sizes}")
    return "\n".join(lines) + "\n"


def export_summary(directory: str | None) -> str | None:
    if not directory:
        return None
    report = json.loads((Path(directory) / "export_check.json").read_text())
    check = report["check"]
    return (
        f"{report['size_mb']:.1f} MB{report['size_note']}; gate {'passed' if check['passed'] else 'failed'} on "
        f"{check['sentences']} sentences: max |logit diff| {check['max_abs_logit_difference']:.2e}, "
        f"{check['sentences_with_other_entities']} sentences with other entities, F1 {check['f1_onnx']['overall']:.4f} "
        f"against torch {check['f1_torch']['overall']:.4f}"
    )


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="ner_accel.train run directory (or model directory).")
    parser.add_argument("--onnx", help="fp32 export of it (ner_accel.export).")
    parser.add_argument("--int8", help="INT8 export of it (ner_accel.export --quantize int8).")
    parser.add_argument("--data", required=True, help="A CoNLL file: the sentences and their gold tags.")
    parser.add_argument("--sentences", type=int, default=10000)
    parser.add_argument("--per-document", type=int, default=40, help="Sentences per long document.")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64, help="Windows per forward (predict's default).")
    parser.add_argument("--chunk-size", type=int, default=4096, help="Documents per Tagger.tag (predict's default).")
    parser.add_argument("--output", help="JSON file (and .md beside it).")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    run_model = Path(args.run) / "model"
    args.run_model = str(run_model if (run_model / "config.json").is_file() else Path(args.run))
    if args.worker:
        worker(args)
        return None
    from ner_accel.training.precision import cpu_has_native_bf16

    skipped = {}
    if "torch_bf16" in args.configs and not cpu_has_native_bf16():
        skipped["torch_bf16"] = "no native bf16 on this CPU (no avx512_bf16 or amx_bf16): emulated, slower than fp32"
    for config, path in (("onnx_fp32", args.onnx), ("onnx_int8", args.int8)):
        if config in args.configs and not path:
            skipped[config] = f"no --{'onnx' if config == 'onnx_fp32' else 'int8'} export given"
    configs = [c for c in args.configs if c not in skipped]
    machine = describe()
    report = {
        "machine": machine,
        "machine_line": one_line(machine),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv),
        "threads": args.threads,
        "skipped": skipped,
        "exports": {k: v for k, v in (("fp32", export_summary(args.onnx)), ("int8", export_summary(args.int8))) if v},
        "real_tokens": {
            w: real_tokens(
                args.run_model, documents(args.data, args.sentences, args.per_document if w == "long" else 1)[0]
            )
            for w in args.workloads
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for workload in args.workloads:
                for config in configs:
                    result = spawn(args, config, workload, Path(scratch) / f"{config}-{workload}-{round_}.json")
                    result["round"] = round_
                    report["runs"].append(result)
                    print(f"round {round_} {workload} {config}: {result['documents_per_s']:.1f} docs/s, "
                          f"F1 {result['f1']['overall']['f1']:.4f}, {result['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
                    report["best"] = best_runs(report["runs"])
                    if args.output:
                        write(report, Path(args.output))
    print(markdown(report))
    return report


def write(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    serialisable = {**report, "best": [{"config": c, "workload": w, **r} for (c, w), r in report["best"].items()]}
    path.write_text(json.dumps(serialisable, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
