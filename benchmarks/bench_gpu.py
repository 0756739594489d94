"""Training throughput of xlm-roberta-base (random weights, real XLM-R tokenization of PAN-X) on one GPU, bf16.

One command, under 8 minutes on an H100/H200 (the model and data are copied beside the repo because ../shared
does not travel to the GPU machine; see BENCHMARKS.md):
    python benchmarks/bench_gpu.py --model .benchdata/xlm-roberta-base-shape --data .benchdata/panx-en-train.conll \
        --output-dir $OUT
The GPU check (versions, the FSDP job, throughput at batch 24 and the largest batch) is gpu_check.py; `--check`
here runs it with the rest of the arguments, as BENCHMARKS.md's commands do:
    python benchmarks/bench_gpu.py --check --model .benchdata/xlm-roberta-base-shape --data-dir .benchdata/panx-en \
        --output-dir $OUT
Run as a file it puts the checkout's root and src/ first on the path (ner_accel without pip install);
`python -m benchmarks.bench_gpu` (from the checkout's root) needs ner_accel installed or PYTHONPATH=src.
CPU smoke test of the same paths (tiny model, a few steps): tests/test_benchmarks.py, tests/test_gpu_check.py.

Needs only torch, transformers, tokenizers, numpy (+ accelerate for the Trainer baseline and ner_accel's loop):
gpu_workload.py reads CoNLL and encodes with ner_accel's reader and encode_batch (its alignment), without datasets,
and gives ner_accel empty `datasets` and `seqeval` placeholders where they are absent (the training step never
calls them; the check needs them: its FSDP job runs ner_accel.train itself). gpu_memory.py frees memory between
configurations and finds the largest batch that fits.

Configurations, each at --batch-sizes (default 24 and 256; `max`: the largest batch that fits), on the same
sentences and initial weights:
  trainer          the seed recipe (trainer_baseline.py): HF Trainer, random batches,
                   DataCollatorForTokenClassification, bf16, the padded model (sdpa attention) as transformers loads it
  trainer_grouped  the same with train_sampling_strategy="group_by_length"
  ner_accel        ner_accel's batches (length-grouped, padded to a multiple of 8, with their packing), unpadded
                   forward, the word embeddings' used rows trained (as train.set_up), and train's step
                   (forward_backward, clip, fused AdamW, schedule, zero_grad) under Accelerate bf16, eager
  ner_accel_padded          the same with the padded model (sdpa): what unpadding is worth on this GPU; since the
                            H200 run, what `--attention auto` trains on CUDA (ner_accel's default path there)
  ner_accel_compile         the same with torch.compile(dynamic=True)
  ner_accel_compile_graphs  torch.compile(mode="reduce-overhead", dynamic=True): CUDA graphs per shape
  ner_accel_padded_compile  ner_accel_padded under torch.compile(dynamic=True)
  ner_accel_padded_graphs   ner_accel_padded under torch.compile(mode="reduce-overhead", dynamic=True)
  ner_accel_nonblocking     ner_accel with --non-blocking (batches copied from pinned memory without waiting)
  ner_accel_varlen          ner_accel with --attention ner_accel_varlen and --non-blocking, attention dropout 0
                            (varlen_attn has none; with XLM-R's 0.1 training would attend by buckets)
  ner_accel_varlen_regions  ner_accel_varlen with --compile regions (the encoder layer compiled once, in place;
                            packed rows topped up to token buckets)
  ner_accel_varlen_graphs   ner_accel_varlen with --compile graphs (the same with CUDA graphs, reduce-overhead)
Reported: real (non-padding) tokens/s, model FLOPs utilisation (6 x non-embedding parameters + attention, per real
token, over the GPU's dense bf16 peak), padding efficiency, peak GPU memory, the warm-up's seconds (compilation and
graph recording included) and the real tokens/s of the whole run, warm-up included; the machine (machine.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.gpu_memory import (
    free_memory,
    is_out_of_memory,
    largest_fitting_batch,
    peak_memory_gib,
    reset_peak_memory,
    sync,
    worst_batch_fits,
)
from benchmarks.gpu_workload import (
    Workload,
    build_model,
    check_requirements,
    device_facts,
    encode,
    model_flops_per_token,
    read_conll,
)
from benchmarks.machine import describe
from benchmarks.tokens import TokenCount
from benchmarks.trainer_baseline import LEARNING_RATE, WEIGHT_DECAY, seed_trainer, training_arguments
from ner_accel.rundir.files import write_json

ROOT = Path(__file__).resolve().parents[1]
UNPADDED, VARLEN = "ner_accel_unpadded", "ner_accel_varlen"  # ner_accel.modeling.unpadding's names


class Setting(NamedTuple):
    """How a ner_accel configuration trains: its attention and the GPU levers of issue 26."""

    attention: str  # sdpa (transformers' padded model), UNPADDED or VARLEN
    compile_mode: str | None = None  # torch.compile of the whole model, this mode (the earlier levers)
    compile: str = "off"  # train's --compile: regions or graphs (the encoder layer in place, token buckets)
    non_blocking: bool = False  # train's --non-blocking
    attention_dropout: float | None = None  # the model config's attention_probs_dropout_prob (None: its own)


SETTINGS = {
    "ner_accel": Setting(UNPADDED),
    "ner_accel_padded": Setting("sdpa"),
    "ner_accel_compile": Setting(UNPADDED, "default"),
    "ner_accel_compile_graphs": Setting(UNPADDED, "reduce-overhead"),  # CUDA graphs per shape
    "ner_accel_padded_compile": Setting("sdpa", "default"),
    "ner_accel_padded_graphs": Setting("sdpa", "reduce-overhead"),
    "ner_accel_nonblocking": Setting(UNPADDED, non_blocking=True),
    "ner_accel_varlen": Setting(VARLEN, non_blocking=True, attention_dropout=0.0),
    "ner_accel_varlen_regions": Setting(VARLEN, compile="regions", non_blocking=True, attention_dropout=0.0),
    "ner_accel_varlen_graphs": Setting(VARLEN, compile="graphs", non_blocking=True, attention_dropout=0.0),
}
TRAINERS = {"trainer": "random", "trainer_grouped": "group_by_length"}  # Trainer configurations: their sampler
CONFIGS = ["trainer", "trainer_grouped", *SETTINGS]
# the runs BENCHMARKS.md reports (the new levers are named with --configs)
DEFAULT_CONFIGS = [c for c in CONFIGS[:8] if c != "trainer_grouped"]
COMPILES = {c for c, s in SETTINGS.items() if s.compile_mode or s.compile != "off"}  # compiling takes minutes
GRAPHS = {c for c, s in SETTINGS.items() if s.compile_mode == "reduce-overhead" or s.compile == "graphs"}
PADDED = {*TRAINERS, *(c for c, s in SETTINGS.items() if s.attention == "sdpa")}  # transformers' padded model


def model_attention(config: str) -> str:
    """The attention a configuration's model is built with (the Trainer's: transformers' padded sdpa)."""
    return SETTINGS[config].attention if config in SETTINGS else "sdpa"


# ---------------------------------------------------------------------------------------------------------------
# The two loops, timed over a window of steps after a warm-up


def run_trainer(model, workload: Workload, batch_size: int, steps: int, warmup: int, sampling: str, max_seconds: float):
    """The seed recipe with Trainer; timed from the end of step `warmup` for `steps` steps or `max_seconds`."""
    from transformers import TrainerCallback

    from ner_accel.data.batching import MODEL_INPUTS

    device, tokens, marks = workload.device, TokenCount(), {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step == warmup:
                sync(device)
                marks["start"] = (time.perf_counter(), *tokens.read(), step)
            elif step > warmup and (step == warmup + steps or time.perf_counter() - marks["start"][0] > max_seconds):
                sync(device)
                marks["end"] = (time.perf_counter(), *tokens.read(), step)
                control.should_training_stop = True

    rows = workload.rows
    dataset = [{k: rows.columns[k][i] for k in MODEL_INPUTS} for i in range(len(rows))]
    arguments = training_arguments(
        os.path.join(tempfile.gettempdir(), "bench-gpu-trainer"), batch_size, 42, "bf16" if workload.bf16 else "no",
        use_cpu=device == "cpu", sampling=sampling, max_steps=warmup + steps, logging_steps=10_000,
    )  # fmt: skip
    hook = tokens.watch(model)
    try:
        seed_trainer(model, workload.tokenizer, dataset, arguments, callbacks=[Clock()]).train()
    finally:
        hook.remove()
    (t0, r0, p0, s0), (t1, r1, p1, s1) = marks["start"], marks["end"]
    return t1 - t0, r1 - r0, p1 - p0, s1 - s0


class Prepared(NamedTuple):
    """A ner_accel configuration ready to train: prepared as train.set_up prepares (one `prepare`)."""

    model: object
    optimizer: object
    loader: object
    scheduler: object
    accelerator: object
    sampler: object


def prepare_ner_accel(model, workload: Workload, batch_size: int, setting: Setting, total_steps: int) -> Prepared:
    """ner_accel's batches (packed as the attention and --compile ask), used embedding rows, fused AdamW, schedule,
    an Accelerator with the setting's non_blocking, the compile the setting names; as train.set_up does."""
    import numpy as np
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import get_scheduler

    from ner_accel.data.batching import make_loader
    from ner_accel.modeling.loading import batch_packing
    from ner_accel.modeling.trained_rows import train_only_used_rows
    from ner_accel.training.compilation import compile_layers
    from ner_accel.training.optimization import build_optimizer

    rows, device = workload.rows, workload.device
    if batch_size > len(rows):
        raise ValueError(f"batch {batch_size} is larger than the {len(rows)} sentences: no full batch to time")
    accelerator = Accelerator(
        mixed_precision="bf16" if workload.bf16 else "no",
        cpu=device == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=setting.non_blocking),
    )
    pad = 8 if workload.bf16 else None
    pack = batch_packing(setting.attention, setting.compile)
    loader = make_loader(rows, workload.tokenizer, batch_size, 42, train=True, pad_to_multiple_of=pad, pack=pack)
    sampler = loader.batch_sampler
    train_only_used_rows(model, np.unique(np.concatenate(rows["input_ids"])))  # as train.set_up does
    compile_layers(model, setting.compile, device)
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if setting.compile_mode is not None:
        model = torch.compile(model, dynamic=True, mode=setting.compile_mode)
    return Prepared(model, optimizer, loader, scheduler, accelerator, sampler)


def train_step(run: Prepared, batch: dict) -> None:
    """train's step, as its loop runs it: forward and backward, clip, step, schedule, zero_grad."""
    from ner_accel.training.optimization import forward_backward

    forward_backward(run.model, [batch], run.accelerator)
    run.accelerator.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def full_batches(run: Prepared, batch_size: int):
    """The prepared loader's full batches, epoch after epoch (the short last batch is a shape of its own)."""
    epoch = 0
    while True:
        run.sampler.set_epoch(epoch)
        for batch in run.loader:
            if len(batch["input_ids"]) == batch_size:
                yield batch
        epoch += 1


def run_ner_accel(model, workload: Workload, batch_size: int, steps: int, warmup: int, setting: Setting,
                  max_seconds: float) -> dict:  # fmt: skip
    """ner_accel's batches and training step (its own functions), timed for `steps` steps or `max_seconds` after
    `warmup` steps; the whole run (warm-up, compilation and graph recording included) is timed too."""
    device, tokens, whole = workload.device, TokenCount(), TokenCount()
    began = time.perf_counter()
    run = prepare_ner_accel(model, workload, batch_size, setting, warmup + steps)
    start, step = None, 0
    for batch in full_batches(run, batch_size):
        if step == warmup:
            sync(device)
            start, warmed, tokens = time.perf_counter(), time.perf_counter() - began, TokenCount()
        train_step(run, batch)
        tokens.add(batch["attention_mask"])
        whole.add(batch["attention_mask"])
        step += 1
        # The host runs a few steps ahead of the GPU, so the time limit is approximate; the timing is not.
        if step == warmup + steps or (step > warmup and time.perf_counter() - start > max_seconds):
            break
    sync(device)
    end = time.perf_counter()
    real, padded = tokens.read()
    return dict(seconds=end - start, real=real, padded=padded, steps=step - warmup, warmup_s=warmed,
                whole_tokens_per_s=whole.read()[0] / (end - began))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Throughput: every configuration at every batch size


def measure(workload: Workload, config: str, batch_size: int, steps: int, warmup: int, max_seconds: float) -> dict:
    """One configuration at one batch size on a fresh model: tokens/s, padding efficiency, memory, MFU, warm-up."""
    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state and refuses an Accelerator at another precision than the last one
    # (Trainer takes ACCELERATE_MIXED_PRECISION, ner_accel's loop its own choice): each configuration starts afresh.
    AcceleratorState._reset_state()
    setting = SETTINGS.get(config)
    overrides = {}
    if setting is not None and setting.attention_dropout is not None:
        overrides["attention_probs_dropout_prob"] = setting.attention_dropout
    model = build_model(workload, model_attention(config), **overrides)
    reset_peak_memory(workload.device)
    started = time.perf_counter()
    try:
        if config in TRAINERS:
            seconds, real, padded, timed_steps = run_trainer(
                model, workload, batch_size, steps, warmup, TRAINERS[config], max_seconds
            )
            timing = {}
        else:
            timing = run_ner_accel(model, workload, batch_size, steps, warmup, setting, max_seconds)
            seconds, real, padded, timed_steps = (timing.pop(k) for k in ("seconds", "real", "padded", "steps"))
    except Exception as error:  # one configuration failing (say, compilation) must not lose the others
        result = dict(config=config, batch_size=batch_size, error=repr(error)[:500], oom=is_out_of_memory(error))
    else:
        flops = model_flops_per_token(model.config, real / (timed_steps * batch_size))  # mean real sentence length
        result = dict(
            config=config,
            batch_size=batch_size,
            steps=timed_steps,
            seconds=seconds,
            tokens_per_s=real / seconds,
            padding_efficiency=real / padded,
            wall_s=time.perf_counter() - started,
            peak_memory_gib=peak_memory_gib(workload.device),
            **timing,
        )
        peak = workload.peak_tflops
        result["mfu"] = result["tokens_per_s"] * flops / (peak * 1e12) if peak else None
    del model
    free_memory(workload.device)
    return result


def scaled_steps(args, batch_size: int) -> tuple[int, int]:
    """Timed and warm-up steps at this batch: fewer above batch 24 (about the same sentences), at least 30 and 5."""
    steps = max(min(args.steps, 30), args.steps * 24 // max(batch_size, 24))
    warmup = max(min(args.warmup, 5), args.warmup * 24 // max(batch_size, 24))
    return steps, warmup


def run_throughput(args, workload: Workload, report: dict, output: Path, deadline: float) -> dict:
    """Each batch size of --batch-sizes for each configuration, `max` after a search; report updated as it goes."""
    began = time.perf_counter()
    report.setdefault("results", [])
    report.setdefault("largest_batch", {})
    fixed = [b for b in args.batch_sizes if b != "max"]
    limit = min(args.max_batch, len(workload.rows))

    def save() -> None:
        write_json(output / "gpu.json", report)

    def skip(config: str, batch: int | str, why: str) -> None:
        print(f"[bench_gpu] skip {config} at batch {batch}: {why}", flush=True)
        report["results"].append(dict(config=config, batch_size=batch, skipped=why))
        save()

    def record(result: dict) -> None:
        report["results"].append(result)
        print(f"[bench_gpu] {json.dumps(result)}", flush=True)
        save()

    for batch_size in args.batch_sizes:
        for config in args.configs:
            spent, left = time.perf_counter() - began, deadline - time.perf_counter()
            compile_short = config in COMPILES and (spent > args.budget_s - 90 or left < 90)
            if spent > args.budget_s or left < args.min_stage_s or compile_short:
                skip(config, batch_size, f"{spent:.0f} s of the time budget spent")
                continue
            if config in GRAPHS and workload.device != "cuda":
                continue  # CUDA graphs need CUDA
            if batch_size != "max":
                record(measure(workload, config, batch_size, *scaled_steps(args, batch_size), args.measure_s))
                continue
            # Configurations with the same attention take the same worst batch: one search per attention.
            attention = model_attention(config)
            if attention not in report["largest_batch"]:
                search = dict(limit=limit, probe="two training steps on the b longest sentences, fused AdamW")
                try:
                    dropout = {"attention_probs_dropout_prob": 0.0} if attention == VARLEN else {}  # as it trains
                    model = build_model(workload, attention, **dropout)
                    search_deadline = min(deadline - args.min_stage_s, time.perf_counter() + args.search_s)
                    best, tried = largest_fitting_batch(
                        lambda b, model=model: worst_batch_fits(model, workload, b),
                        min(fixed or [24]),
                        limit,
                        search_deadline,
                    )
                    search.update(largest=best, tried=tried)
                except Exception as error:  # a bug in the probe, not a full device: the fixed batches still count
                    search.update(largest=None, error=repr(error)[:500])
                    best, tried = None, []
                model = None
                free_memory(workload.device)
                report["largest_batch"][attention] = search
                print(f"[bench_gpu] largest batch with {attention} attention: {best} (tried {tried})", flush=True)
                save()
            size = report["largest_batch"][attention]["largest"]
            if size is None:
                skip(config, "max", "not even the first batch of the search fit")
                continue
            # The probe is a worst case, yet the allocator may still fragment: halve until the real run fits.
            while True:
                result = measure(workload, config, size, *scaled_steps(args, size), args.measure_s)
                result["largest"] = True
                if not result.get("oom") or size // 2 < min(fixed or [1]) or deadline - time.perf_counter() < 60:
                    break
                record(result)
                size //= 2
            record(result)
    return report


# ---------------------------------------------------------------------------------------------------------------
# Command line


def batch_size_arg(text: str) -> int | str:
    """--batch-sizes: a positive integer, or `max` (the largest batch that fits)."""
    if text == "max":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer or 'max'")
    return int(text)


def throughput_parser(description: str) -> argparse.ArgumentParser:
    """The options of the throughput runs; the GPU check (gpu_check.py) adds its own to them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="directory with an XLM-R (or BERT) config and fast tokenizer")
    parser.add_argument("--data", help="a PAN-X train.conll (default: train.conll of --data-dir)")
    parser.add_argument("--data-dir", help="a directory with train.conll and validation.conll (the check needs it)")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument(
        "--batch-sizes", type=batch_size_arg, nargs="+", help="sizes, or max (default 24 256; the check: 24 max)"
    )
    parser.add_argument("--max-batch", type=int, default=4096, help="the largest batch the `max` search tries")
    parser.add_argument("--search-s", type=float, default=60, help="time for one `max` search")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, help="default: all but trainer_grouped")
    parser.add_argument(
        "--steps", type=int, default=200, help="timed optimizer steps at batch 24 (scaled down for larger)"
    )
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--measure-s", type=float, default=20, help="stop timing a configuration after this long")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--budget-s", type=float, help="skip configurations once this much time is spent (420)")
    parser.add_argument("--min-stage-s", type=float, default=45, help="do not start a measurement with less left")
    parser.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"))
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The throughput runs' options, with the defaults that depend on others filled in."""
    parser = throughput_parser(__doc__)
    args = parser.parse_args(argv)
    args.budget_s = args.budget_s or 420
    args.batch_sizes = args.batch_sizes or [24, 256]
    args.configs = args.configs or DEFAULT_CONFIGS
    if args.data is None and args.data_dir is None:
        parser.error("pass --data (a train.conll) or --data-dir")
    args.data = args.data or str(Path(args.data_dir) / "train.conll")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--check" in argv:  # the GPU check has its own module; the flag stays for the commands in BENCHMARKS.md
        from benchmarks import gpu_check

        return gpu_check.main([a for a in argv if a != "--check"])
    args = parse_args(argv)
    check_requirements()

    import torch
    from transformers import AutoTokenizer

    began = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name, bf16, peak = device_facts(device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode(read_conll(Path(args.data), args.sentences), tokenizer)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = throughput_report(name, bf16, peak, len(rows))
    print(f"[bench_gpu] {name}, {len(rows)} sentences, precision {report['precision']}", flush=True)
    run_throughput(args, Workload(args.model, rows, tokenizer, device, bf16, peak), report, output, math.inf)
    report["total_s"] = time.perf_counter() - began
    write_json(output / "gpu.json", report)
    (output / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return report


def throughput_report(device_name: str, bf16: bool, peak: float | None, sentences: int) -> dict:
    """The report's header, before any result: device, versions, precision, sentences, the machine."""
    import torch

    return dict(
        device=device_name,
        torch=torch.__version__,
        precision="bf16" if bf16 else "fp32",
        sentences=sentences,
        peak_bf16_tflops=peak,
        machine=describe(),
        results=[],
    )


def markdown(report: dict) -> str:
    lines = [
        f"Device: {report['device']}, torch {report['torch']}, {report['precision']}, "
        f"xlm-roberta-base (random weights), {report['sentences']} PAN-X.en sentences",
        "",
        "| batch | config | real tok/s | x trainer | MFU | padding eff. | peak GPU GiB | wall s | warm-up s "
        "| whole-run tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row_key(r: dict) -> tuple:
        """The trainer row a result is compared with: the same batch, or the trainer's own largest batch."""
        return ("largest",) if r.get("largest") else ("batch", r["batch_size"])

    base = {
        row_key(r): r["tokens_per_s"] for r in report["results"] if r["config"] == "trainer" and "tokens_per_s" in r
    }
    for r in report["results"]:
        batch = f"{r['batch_size']} (largest)" if r.get("largest") else r["batch_size"]
        if "error" in r or "skipped" in r:
            why = f"failed: {r['error'][:80]}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"| {batch} | {r['config']} | {why} | | | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base[row_key(r)]:.2f}" if row_key(r) in base else "-"
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        warm = f"{r['warmup_s']:.1f}" if "warmup_s" in r else "-"
        whole = f"{r['whole_tokens_per_s']:,.0f}" if "whole_tokens_per_s" in r else "-"
        lines.append(
            f"| {batch} | {r['config']} | {r['tokens_per_s']:,.0f} | {ratio} | {mfu} | "
            f"{r['padding_efficiency']:.3f} | {memory} | {r['wall_s']:.0f} | {warm} | {whole} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main().get("status", "pass") == "pass" else 1)
