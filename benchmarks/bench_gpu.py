"""Training throughput of xlm-roberta-base (random weights, real XLM-R tokenization of PAN-X) on one GPU, bf16.

One command, under 8 minutes on an H100/H200 (the model and data are copied beside the repo because ../shared
does not travel to the GPU machine; see BENCHMARKS.md):
    python benchmarks/bench_gpu.py --model .benchdata/xlm-roberta-base-shape --data .benchdata/panx-en-train.conll \
        --output-dir $OUT
The GPU check (BENCHMARKS.md, "GPU check"): versions, throughput at batch 24 and at the largest batch that fits, and
a one-process FSDP job that is stopped by SIGTERM, resumed and saved; at most 8 minutes, JSON into --output-dir:
    python benchmarks/bench_gpu.py --check --model .benchdata/xlm-roberta-base-shape --data-dir .benchdata/panx-en \
        --output-dir $OUT
CPU smoke test of the same paths (tiny model, a few steps): tests/test_benchmarks.py, tests/test_gpu_check.py.

Needs only torch, transformers, tokenizers, numpy (+ accelerate for the Trainer baseline and ner_accel's loop);
it reads CoNLL itself and imports ner_accel from src/ (its alignment, batching, model and training-step code).
`datasets` and `seqeval`, which the training step never calls, are replaced by empty placeholders when absent
(--check needs them: its FSDP job runs ner_accel.train itself).

Configurations, each at --batch-sizes (default 24 and 256; `max`: the largest batch that fits), on the same
sentences and initial weights:
  trainer          the seed recipe: HF Trainer, random batches, DataCollatorForTokenClassification, bf16, the
                   padded model (sdpa attention) as transformers loads it
  trainer_grouped  the same with train_sampling_strategy="group_by_length"
  ner_accel        ner_accel's batches (length-grouped, padded to a multiple of 8), unpadded forward and step
                   (forward_backward, clip, fused AdamW, schedule) under Accelerate bf16, eager
  ner_accel_padded          the same with the padded model (sdpa): what unpadding is worth on this GPU; since the
                            H200 run, what `--attention auto` trains on CUDA (ner_accel's default path there)
  ner_accel_compile         the same with torch.compile(dynamic=True)
  ner_accel_compile_graphs  torch.compile(mode="reduce-overhead", dynamic=True): CUDA graphs per shape
  ner_accel_padded_compile  ner_accel_padded under torch.compile(dynamic=True)
  ner_accel_padded_graphs   ner_accel_padded under torch.compile(mode="reduce-overhead", dynamic=True)
Reported: real (non-padding) tokens/s, model FLOPs utilisation (6 x non-embedding parameters + attention, per real
token, over the GPU's dense bf16 peak), padding efficiency, peak GPU memory.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REQUIRED = ["torch", "transformers", "tokenizers", "numpy", "accelerate"]
CHECK_REQUIRED = [*REQUIRED, "datasets", "seqeval", "safetensors"]  # the FSDP job runs ner_accel.train itself
LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
LEARNING_RATE, WEIGHT_DECAY = 5e-5, 0.01  # the seed recipe's
MODEL_INPUTS = ["input_ids", "attention_mask", "labels"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
CONFIGS = [
    "trainer",
    "trainer_grouped",
    "ner_accel",
    "ner_accel_padded",
    "ner_accel_compile",
    "ner_accel_compile_graphs",
    "ner_accel_padded_compile",
    "ner_accel_padded_graphs",
]
DEFAULT_CONFIGS = [c for c in CONFIGS if c != "trainer_grouped"]  # the runs BENCHMARKS.md reports
CHECK_CONFIGS = ["trainer", "ner_accel", "trainer_grouped", "ner_accel_padded"]  # the main comparison first
COMPILE_MODES = {  # torch.compile's mode per configuration; reduce-overhead records CUDA graphs per shape
    "ner_accel_compile": "default",
    "ner_accel_compile_graphs": "reduce-overhead",
    "ner_accel_padded_compile": "default",
    "ner_accel_padded_graphs": "reduce-overhead",
}
TRAINERS = {"trainer": "random", "trainer_grouped": "group_by_length"}  # Trainer configurations: their sampler
PADDED = {
    "trainer",
    "trainer_grouped",
    "ner_accel_padded",
    "ner_accel_padded_compile",
    "ner_accel_padded_graphs",
}  # configurations that run transformers' padded sdpa model
WRAP_CLASS = {"xlm-roberta": "XLMRobertaLayer", "bert": "BertLayer"}  # FSDP's shard unit per model type
LOGITS_TOLERANCE = 1e-3  # fp32 logits, padded sdpa vs unpadded attention: ~1e-6 on CPU, kernels differ on CUDA
CHILDREN: set = set()  # launched processes, killed with their workers if the check runs out of time


def check_requirements(names: list[str] = REQUIRED, stub_missing: bool = True) -> None:
    """Exit with one line naming what is missing; give ner_accel empty datasets/seqeval modules if asked."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"bench_gpu.py needs {', '.join(missing)} (pip install {' '.join(missing)}); nothing was run")
    # Import transformers' Trainer first, so it records datasets as absent; then give the ner_accel modules
    # placeholders to import, and take them away again.
    import transformers.trainer  # noqa: F401

    stubs = []
    for name in ("datasets", "seqeval") if stub_missing else ():
        if importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.Dataset, stub.concatenate_datasets, stub.config = object, None, types.SimpleNamespace()
            stub.metrics = types.ModuleType(f"{name}.metrics")
            for function in ("classification_report", "f1_score", "precision_score", "recall_score"):
                setattr(stub.metrics, function, None)
            sys.modules[name], sys.modules[f"{name}.metrics"] = stub, stub.metrics
            stubs += [name, f"{name}.metrics"]
    import ner_accel.train  # noqa: F401

    for name in stubs:
        del sys.modules[name]


def read_conll(path: Path, limit: int | None) -> list[dict]:
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
        elif not line.startswith("-DOCSTART-"):
            columns = line.split("\t")
            tokens.append(columns[0])
            tags.append(columns[-1].strip())
    return sentences[:limit]


class Rows:
    """Column store with the slice of the datasets.Dataset API that ner_accel.data.batching.make_loader uses."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        return self.columns[key] if isinstance(key, str) else {k: v[key] for k, v in self.columns.items()}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [{k: list(v[i]) for k, v in self.columns.items()} for i in indices]

    def select_columns(self, names: list[str]) -> Rows:
        return Rows({name: self.columns[name] for name in names})


def encode(sentences: list[dict], tokenizer) -> Rows:
    from ner_accel.data.encoding import encode_batch

    batch = {"tokens": [s["tokens"] for s in sentences], "tags": [s["tags"] for s in sentences]}
    encoded = encode_batch(batch, tokenizer, {label: i for i, label in enumerate(LABELS)}, 512, False)
    return Rows({k: encoded[k] for k in ("input_ids", "attention_mask", "labels", "length")})


def model_flops_per_token(config, mean_length: float) -> float:
    """Training FLOPs per token: 6 x non-embedding weights, plus attention scores and values (12 x L x d x S)."""
    d, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights = layers * (4 * d * d + 2 * d * inner) + d * config.num_labels
    return 6 * weights + 12 * layers * d * mean_length


class Workload(NamedTuple):
    """What every configuration trains on: the model directory, the encoded sentences, the device and precision."""

    model: str
    rows: Rows
    tokenizer: object
    device: str
    bf16: bool
    peak_tflops: float | None


def build_model(workload: Workload, attention: str):
    """The seed's head with random weights, the same for every configuration (seeded), built on the device."""
    import torch

    from ner_accel.modeling.loading import load_model

    torch.manual_seed(0)
    with torch.device(workload.device):  # random init on the GPU takes milliseconds, on the host seconds
        model = load_model(workload.model, LABELS, from_config=True, attention=attention)
    return model.to(workload.device)


# ---------------------------------------------------------------------------------------------------------------


def run_trainer(
    model,
    rows: Rows,
    tokenizer,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str,
    bf16: bool,
    sampling: str = "random",
    max_seconds: float = math.inf,
):
    """The seed recipe with Trainer; timed from the end of step `warmup` for `steps` steps or `max_seconds`."""
    import dataclasses

    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback, TrainingArguments

    seen = {"real": 0, "padded": 0}

    def count(module, args, kwargs):
        if module.training:
            seen["real"] += kwargs["attention_mask"].sum()
            seen["padded"] += kwargs["attention_mask"].numel()

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step == warmup:
                sync(device)
                marks["start"] = (time.perf_counter(), int(seen["real"]), int(seen["padded"]), step)
            elif step > warmup and (step == warmup + steps or time.perf_counter() - marks["start"][0] > max_seconds):
                sync(device)
                marks["end"] = (time.perf_counter(), int(seen["real"]), int(seen["padded"]), step)
                control.should_training_stop = True

    dataset = [{k: rows.columns[k][i] for k in MODEL_INPUTS} for i in range(len(rows))]
    # transformers >= 5 names the sampler; older versions had a group_by_length flag.
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    sampler = (
        {"train_sampling_strategy": sampling}
        if "train_sampling_strategy" in fields
        else {"group_by_length": sampling == "group_by_length"}
    )
    args = TrainingArguments(
        output_dir=os.path.join(tempfile.gettempdir(), "bench-gpu-trainer"),
        log_level="error",
        max_steps=warmup + steps,
        per_device_train_batch_size=batch_size,
        weight_decay=WEIGHT_DECAY,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        logging_steps=10_000,
        report_to="none",
        seed=42,
        bf16=bf16,
        use_cpu=device == "cpu",
        **sampler,
    )
    try:
        Trainer(
            model=model,
            args=args,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            train_dataset=dataset,
            callbacks=[Clock()],
        ).train()
    finally:
        hook.remove()
    (t0, r0, p0, s0), (t1, r1, p1, s1) = marks["start"], marks["end"]
    return t1 - t0, r1 - r0, p1 - p0, s1 - s0


def run_ner_accel(
    model,
    rows: Rows,
    tokenizer,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str,
    bf16: bool,
    compile_mode: str | None,
    max_seconds: float = math.inf,
):
    """ner_accel's batches and training step (its own functions), timed for `steps` steps or `max_seconds`."""
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import get_scheduler

    from ner_accel.data.batching import make_loader
    from ner_accel.training.optimization import build_optimizer, forward_backward

    if batch_size > len(rows):
        raise ValueError(f"batch {batch_size} is larger than the {len(rows)} sentences: no full batch to time")
    accelerator = Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        cpu=device == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    loader = make_loader(rows, tokenizer, batch_size, 42, train=True, pad_to_multiple_of=8 if bf16 else None)
    sampler = loader.batch_sampler
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=warmup + steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if compile_mode is not None:
        model = torch.compile(model, dynamic=True, mode=compile_mode)
    step, epoch, real, padded, start, timed = 0, 0, 0, 0, None, False
    while not timed:
        sampler.set_epoch(epoch)
        for batch in loader:
            if len(batch["input_ids"]) < batch_size:
                continue  # the short last batch: a shape of its own, not worth a graph here
            if step == warmup:
                sync(device)
                start, real, padded = time.perf_counter(), 0, 0
            forward_backward(model, [batch], accelerator)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            real += batch["attention_mask"].sum()
            padded += batch["attention_mask"].numel()
            step += 1
            # The host runs a few steps ahead of the GPU, so the time limit is approximate; the timing is not.
            timed = step == warmup + steps or (step > warmup and time.perf_counter() - start > max_seconds)
            if timed:
                break
        epoch += 1
    sync(device)
    return time.perf_counter() - start, int(real), int(padded), step - warmup


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    """Give the GPU back what the last configuration held."""
    import torch

    # Trainer and Accelerator objects sit in reference cycles: only a collection frees them. On a CPU nothing is
    # measured, and a collection of this process's heap costs 0.3 s.

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reset_peak_memory(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    text = str(error)
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower() or "ALLOC_FAILED" in text


# ---------------------------------------------------------------------------------------------------------------
# The largest batch that fits


def worst_batch_fits(model, workload: Workload, batch_size: int) -> dict:
    """Whether two training steps on the `batch_size` longest sentences run without running out of memory."""
    # No epoch of any configuration has a batch that needs more: padded, it is b x the longest sentence; unpadded,
    # it holds the most real tokens. The second step also holds AdamW's state.
    import numpy as np
    import torch
    from transformers import DataCollatorForTokenClassification

    from ner_accel.training.optimization import build_optimizer

    longest = np.argsort(-np.asarray(workload.rows["length"]), kind="stable")[:batch_size].tolist()
    collate = DataCollatorForTokenClassification(workload.tokenizer, pad_to_multiple_of=8 if workload.bf16 else None)
    batch = collate(workload.rows.select_columns(MODEL_INPUTS).__getitems__(longest))
    batch = {k: v.to(workload.device) for k, v in batch.items()}
    reset_peak_memory(workload.device)
    started, fits, loss = time.perf_counter(), True, None
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY)
    try:
        for _ in range(2):
            with torch.autocast(workload.device, dtype=torch.bfloat16, enabled=workload.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(workload.device)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        fits = False
    peak = peak_memory_gib(workload.device)
    del optimizer, batch, loss  # an out-of-memory backward leaves the loss holding the whole graph
    model.zero_grad(set_to_none=True)
    if not fits:  # the failed step's tensors sit in the exception's frames until a collection
        free_memory(workload.device)
    return dict(batch_size=batch_size, fits=fits, peak_memory_gib=peak, seconds=time.perf_counter() - started)


def largest_fitting_batch(fits, start: int, limit: int, deadline: float) -> tuple[int | None, list[dict]]:
    """The last batch that fit (None if `start` did not) and every probe, doubling from `start` up to `limit`."""
    # Stops at the first batch whose fits(b)["fits"] is False, or when the clock passes `deadline`.
    best, tried, size = None, [], start
    while size <= limit and time.perf_counter() < deadline:
        probe = fits(size)
        tried.append(probe)
        if not probe["fits"]:
            break
        best = size
        size = limit if size < limit < 2 * size else 2 * size  # the limit itself is the last candidate
    return best, tried


# ---------------------------------------------------------------------------------------------------------------
# Throughput: every configuration at every batch size


def measure(workload: Workload, config: str, batch_size: int, steps: int, warmup: int, max_seconds: float) -> dict:
    """One configuration at one batch size on a fresh model: tokens/s, padding efficiency, memory, MFU."""
    from accelerate.state import AcceleratorState

    from ner_accel.modeling.unpadding import UNPADDED

    # accelerate keeps one process-wide state and refuses an Accelerator at another precision than the last one
    # (Trainer takes ACCELERATE_MIXED_PRECISION, ner_accel's loop its own choice): each configuration starts afresh.
    AcceleratorState._reset_state()
    compile_mode = COMPILE_MODES.get(config)
    model = build_model(workload, "sdpa" if config in PADDED else UNPADDED)
    reset_peak_memory(workload.device)
    started = time.perf_counter()
    try:
        if config in TRAINERS:
            seconds, real, padded, timed_steps = run_trainer(
                model,
                workload.rows,
                workload.tokenizer,
                batch_size,
                steps,
                warmup,
                workload.device,
                workload.bf16,
                TRAINERS[config],
                max_seconds,
            )
        else:
            seconds, real, padded, timed_steps = run_ner_accel(
                model,
                workload.rows,
                workload.tokenizer,
                batch_size,
                steps,
                warmup,
                workload.device,
                workload.bf16,
                compile_mode,
                max_seconds,
            )
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
    from ner_accel.modeling.unpadding import UNPADDED

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
            compiles = config in COMPILE_MODES
            spent, left = time.perf_counter() - began, deadline - time.perf_counter()
            compile_short = compiles and (spent > args.budget_s - 90 or left < 90)  # compiling takes minutes
            if spent > args.budget_s or left < args.min_stage_s or compile_short:
                skip(config, batch_size, f"{spent:.0f} s of the time budget spent")
                continue
            if COMPILE_MODES.get(config) == "reduce-overhead" and workload.device != "cuda":
                continue  # CUDA graphs need CUDA
            if batch_size != "max":
                record(measure(workload, config, batch_size, *scaled_steps(args, batch_size), args.measure_s))
                continue
            # Configurations with the same attention take the same worst batch: one search per attention.
            attention = "sdpa" if config in PADDED else UNPADDED
            if attention not in report["largest_batch"]:
                search = dict(limit=limit, probe="two training steps on the b longest sentences, fused AdamW")
                try:
                    model = build_model(workload, attention)
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
# The FSDP job: train, stop by SIGTERM after the first checkpoint, resume, save, load in plain transformers


def train_worker(state_file: str, train_argv: list[str]) -> int:
    """ner_accel.train.main under `accelerate launch`, then what accelerate ran it as, to `state_file`."""
    from ner_accel.train import main as train_main

    try:
        return train_main(train_argv)
    finally:
        if os.environ.get("RANK", "0") == "0":
            try:
                state = accelerate_state()
            except Exception as error:  # a renamed attribute must not hide how the training ended
                state = {"error": repr(error)}
            write_json(Path(state_file), state)


def accelerate_state() -> dict:
    """The distributed type, processes, device and FSDP settings that this process's Accelerator ran with."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state  # read, not constructed: constructing would initialise a new state
    if "distributed_type" not in shared:
        return {"initialised": False}
    plugin = shared.get("fsdp_plugin")
    state = dict(
        distributed_type=str(getattr(shared["distributed_type"], "value", shared["distributed_type"])),
        num_processes=shared.get("num_processes"),
        device=str(shared.get("device")),
        backend=shared.get("backend"),
        mixed_precision=shared.get("_mixed_precision"),
    )
    if plugin is not None:
        names = ["fsdp_version", "state_dict_type", "reshard_after_forward", "transformer_cls_names_to_wrap"]
        state["fsdp"] = {name: str(getattr(plugin, name, None)) for name in [*names, "mixed_precision_policy"]}
    return state


def save_random_model(source: str, path: Path, device: str) -> Path:
    """`source`'s architecture with random weights and its tokenizer, saved where ner_accel.train can load them."""
    # from_config, as bench_train.py's random_xlmr: the shape directory in ../shared holds no weights.
    import torch
    from transformers import AutoTokenizer

    from ner_accel.modeling.loading import load_model

    torch.manual_seed(42)
    with torch.device(device):
        model = load_model(source, LABELS, from_config=True)
    model.cpu().save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    del model
    free_memory(device)  # the training processes need the GPU memory, not this one
    return path


def free_port() -> int:
    """A port nobody listens on, so concurrent launches (other test runs) do not share a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Process ids below `pid` (torchrun starts its workers in their own session: a process group misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(process: subprocess.Popen) -> None:
    for pid in [*descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def wait_for(process: subprocess.Popen, deadline: float) -> bool:
    """Wait until the process exits (True) or the deadline passes (False: it is killed, workers included)."""
    try:
        process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        return True
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return False
    finally:
        CHILDREN.discard(process)


def launch(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    with log.open("w") as handle:  # the child holds its own copy of the descriptor
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    CHILDREN.add(process)
    return process


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the checkpoint that `latest` names, None before the first."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    state = run_dir / "checkpoints" / pointer.read_text().strip() / "trainer_state.json"
    return json.loads(state.read_text())["step"] if state.is_file() else None


def load_weights(directory: Path) -> dict:
    """Every tensor of a model or checkpoint directory: safetensors files, or accelerate's FSDP full state dict."""
    import torch
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    for file in sorted(directory.glob("pytorch_model_fsdp*.bin")):
        tensors.update(torch.load(file, map_location="cpu", weights_only=True))
    return tensors


def compare_saved_model(model_dir: Path, checkpoint_dir: Path, validation: Path, device: str) -> dict:
    """model/ in plain transformers vs ner_accel's load_trained, and its weights vs the final checkpoint's."""
    # Same logits on real tokens: it loads without ner_accel. Same weights: it is the trained state.
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from ner_accel.modeling.loading import load_trained

    plain, info = AutoModelForTokenClassification.from_pretrained(model_dir, output_loading_info=True)
    ours = load_trained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = [s["tokens"] for s in read_conll(validation, 16)]
    batch = tokenizer(words, is_split_into_words=True, truncation=True, padding=True, return_tensors="pt").to(device)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = plain.to(device).eval()(**batch).logits[real].float()
        logits = ours.to(device).eval()(**batch).logits[real].float()
    saved, checkpoint = load_weights(model_dir), load_weights(checkpoint_dir)
    common = sorted(set(saved) & set(checkpoint))
    weight_diff = max((saved[k].float() - checkpoint[k].float()).abs().max().item() for k in common) if common else None
    config = json.loads((model_dir / "config.json").read_text())
    return dict(
        plain_class=f"{type(plain).__module__}.{type(plain).__name__}",
        architectures=config.get("architectures"),
        loading_info={k: [str(x) for x in v] for k, v in info.items()},
        logits_max_abs_diff=(logits - expected).abs().max().item(),
        predictions_agree=(logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
        compared_tokens=int(real.sum()),
        checkpoint_files=sorted(p.name for p in checkpoint_dir.iterdir()),
        weights_compared=len(common),
        weights_only_in_model=sorted(set(saved) - set(checkpoint))[:10],
        weights_only_in_checkpoint=sorted(set(checkpoint) - set(saved))[:10],
        weights_max_abs_diff=weight_diff,
    )


def run_fsdp(args, work: Path, output: Path, deadline: float, device: str) -> dict:
    """launch/fsdp.yaml on one process: stopped after the first checkpoint, resumed, saved, loaded without ner_accel."""
    # SIGTERM makes ner_accel finish the step, checkpoint and exit 143; `--resume latest` then runs to the end.
    began = time.perf_counter()
    data_dir, work = Path(args.data_dir).resolve(), work.resolve()  # the launches run in the repository root
    model_dir = save_random_model(args.model, work / "random-model", device)
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    batch = args.fsdp_batch_size
    train_sentences = min(args.fsdp_steps * batch, len(read_conll(data_dir / "train.conll", None)))
    steps_per_epoch = math.ceil(train_sentences / batch)
    epochs = math.ceil(args.fsdp_steps / steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    # Past half-way, so the resumed run reaches the end without another --checkpoint-steps save (each one writes
    # the model and AdamW's state: 3.3 GB for xlm-roberta-base).
    checkpoint_steps = total_steps // 2 + 1
    run_dir = work / "fsdp-run"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch" / "fsdp.yaml")]
    launcher += ["--num_processes", "1", "--main_process_port", str(free_port())]
    launcher += ["--fsdp_transformer_layer_cls_to_wrap", WRAP_CLASS[model_type]]  # the yaml names XLM-R's
    train_args = ["--model", str(model_dir), "--data-dir", str(data_dir), "--output-dir", str(work)]
    train_args += ["--run-name", run_dir.name, "--max-train-samples", str(train_sentences)]
    train_args += ["--max-eval-samples", str(args.fsdp_eval_samples), "--per-device-train-batch-size", str(batch)]
    train_args += ["--num-train-epochs", str(epochs), "--checkpoint-steps", str(checkpoint_steps)]
    # Evaluation only at the end (and the sanity batches at step 0), one checkpoint kept: the job tests mechanics.
    train_args += ["--eval-steps", "1000000000", "--keep-checkpoints", "1", "--logging-steps", "10"]
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]  # ner_accel without pip install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="1000", TOKENIZERS_PARALLELISM="false")  # COLUMNS: rich does not wrap
    env.setdefault("HF_DATASETS_CACHE", str(work / "datasets-cache"))

    def worker(name: str) -> list[str]:
        """ner_accel.train.main through this script, which also records what accelerate ran it as."""
        return [str(Path(__file__).resolve()), "--train-worker", str(work / f"{name}-state.json")]

    result = dict(
        command=" ".join(launcher + worker("run1") + train_args),
        model_type=model_type,
        train_sentences=train_sentences,
        batch_size=batch,
        epochs=epochs,
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps,
        prepare_s=time.perf_counter() - began,
    )
    halfway = time.perf_counter() + (deadline - time.perf_counter()) * 0.5

    # Run 1: stopped by SIGTERM as soon as the first checkpoint exists, as a preemption or Slurm --signal would.
    started = time.perf_counter()
    first = launch(launcher + worker("run1") + train_args, output / "fsdp-run1.log", env)
    signalled_at = None
    while first.poll() is None and time.perf_counter() < halfway:
        signalled_at = checkpoint_step(run_dir)
        if signalled_at is not None:
            first.send_signal(signal.SIGTERM)  # torchrun forwards it to the worker and waits up to 30 s
            break
        time.sleep(0.05)
    if signalled_at is None and first.poll() is None:
        kill_tree(first)  # no checkpoint in half the stage's time: nothing to stop and resume
    finished = wait_for(first, halfway + 35)
    log1 = (output / "fsdp-run1.log").read_text(errors="replace")
    stopped = re.search(r"stopped by signal (\d+); checkpoint saved to (\S+)\.", log1)
    result["run1"] = dict(
        seconds=time.perf_counter() - started,
        launcher_exit_code=first.returncode if finished else "killed: out of time",
        signalled_after_checkpoint_step=signalled_at,
        stopped_by_signal=int(stopped.group(1)) if stopped else None,
        stopped_at_step=checkpoint_step(run_dir),
        accelerate=read_json(work / "run1-state.json"),
    )
    print(f"[gpu_check] FSDP run 1: {json.dumps(result['run1'])}", flush=True)
    if not stopped:
        result["run1"]["log_tail"] = log1[-3000:]
    if (run_dir / "model").is_dir():
        result.update(status="fail", error="run 1 finished before SIGTERM reached it; raise --fsdp-steps")
        return result
    if checkpoint_step(run_dir) is None:  # killed mid-save (torchrun's 30 s grace) still leaves the one before
        result.update(status="fail", error="run 1 left no checkpoint to resume; see fsdp-run1.log")
        return result

    # Run 2: the same command plus --resume latest, to the end; it saves model/ with the gathered state dict.
    started = time.perf_counter()
    second = launch(launcher + worker("run2") + train_args + ["--resume", "latest"], output / "fsdp-run2.log", env)
    finished = wait_for(second, deadline - args.fsdp_verify_s)
    log2 = (output / "fsdp-run2.log").read_text(errors="replace")
    resumed = re.search(r"resumed from \S+ at step (\d+)", log2)
    result["run2"] = dict(
        seconds=time.perf_counter() - started,
        exit_code=second.returncode if finished else "killed: out of time",
        resumed_at_step=int(resumed.group(1)) if resumed else None,
        final_step=checkpoint_step(run_dir),
        accelerate=read_json(work / "run2-state.json"),
    )
    print(f"[gpu_check] FSDP run 2: {json.dumps(result['run2'])}", flush=True)
    if second.returncode != 0 or not (run_dir / "model" / "config.json").is_file():
        result.update(status="fail", error="the resumed run did not finish and save model/; see fsdp-run2.log")
        result["run2"]["log_tail"] = log2[-3000:]
        return result

    checkpoint = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    started = time.perf_counter()
    result["saved_model"] = compare_saved_model(run_dir / "model", checkpoint, data_dir / "validation.conll", device)
    result["saved_model"]["seconds"] = time.perf_counter() - started
    metrics = read_json(run_dir / "metrics.json") or {}
    result["final_f1"] = {k: v.get("f1") for k, v in metrics.get("final", {}).items() if isinstance(v, dict)}
    ran_as = result["run2"]["accelerate"] or {}
    saved = result["saved_model"]
    result["ran_as"] = dict(
        distributed_type=ran_as.get("distributed_type"),
        fsdp=ran_as.get("fsdp"),
        checkpoint_format="FSDP full state dict (pytorch_model_fsdp.bin)"
        if any(f.startswith("pytorch_model_fsdp") for f in saved["checkpoint_files"])
        else "plain accelerate state (model.safetensors)",
    )
    if ran_as.get("distributed_type") != "FSDP":
        result["ran_as"]["note"] = (
            f"accelerate {importlib.metadata.version('accelerate')} turns an FSDP launch config into FSDP only on "
            "GPU-like devices (AcceleratorState sets DistributedType.FSDP for MULTI_GPU, MULTI_XPU, ...); here the "
            "launch went through torchrun as one plain process: resume, SIGTERM and the save path ran, FSDP "
            "sharding, its state-dict gathering and its checkpoint format did not"
        )
    result["checks"] = checks = dict(
        stopped_by_sigterm=result["run1"]["stopped_by_signal"] == signal.SIGTERM,
        stopped_before_the_end=(result["run1"]["stopped_at_step"] or total_steps) < total_steps,
        resumed_where_it_stopped=result["run2"]["resumed_at_step"] == result["run1"]["stopped_at_step"],
        ran_to_the_end=result["run2"]["final_step"] == total_steps,
        loads_in_plain_transformers=not any(saved["loading_info"].get(k) for k in ("missing_keys", "unexpected_keys")),
        same_logits=saved["logits_max_abs_diff"] <= LOGITS_TOLERANCE,  # argmax may flip on a near tie: not checked
        model_equals_final_checkpoint=saved["weights_compared"] > 0 and saved["weights_max_abs_diff"] == 0.0,
    )
    result["status"] = "pass" if all(checks.values()) else "fail"
    return result


# ---------------------------------------------------------------------------------------------------------------
# The GPU check: environment, throughput, FSDP; JSON written after every stage


def write_json(path: Path, data) -> None:
    """Through a temporary file and a rename: a reader (or a timeout) never finds half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def package_versions() -> dict:
    """Python and every package the check imports (None: not installed), read without importing them."""
    found = dict(python=platform.python_version())
    for name in ["torch", "transformers", "accelerate", "datasets", "seqeval", "tokenizers", "numpy", "safetensors"]:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(device: str) -> dict:
    """Device, driver and the versions of everything the check imports."""
    import torch

    found = dict(package_versions(), platform=platform.platform(), cpus=os.cpu_count())
    found.update(device=device, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        found.update(
            gpu=properties.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=properties.total_memory / 2**30,
            compute_capability=f"{properties.major}.{properties.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            found["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=15).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            found["nvidia_smi"] = repr(error)
    return found


def check_inputs(args) -> None:
    """Fail in one line, before any work, on a model or data directory the check cannot use."""
    model, data = Path(args.model), Path(args.data_dir)
    for path, what in [
        (model / "config.json", "--model: a model config"),
        (model / "tokenizer.json", "--model: a fast tokenizer"),
        (data / "train.conll", "--data-dir: the training sentences"),
        (data / "validation.conll", "--data-dir: the validation sentences"),
    ]:
        if not path.is_file():
            sys.exit(f"bench_gpu.py --check: {path} is missing ({what}); run the prep command in BENCHMARKS.md")


def start_watchdog(seconds: float, check_file: Path, report: dict) -> threading.Timer:
    """The hard limit: if a stage hangs (a CUDA call, a launcher), record it, kill the launches and exit."""

    def abort() -> None:
        report.update(status="aborted", error=f"over the {seconds:.0f} s hard limit; stages without results hung")
        write_json(check_file, report)
        print(f"[gpu_check] aborted after {seconds:.0f} s; partial results in {check_file.parent}", flush=True)
        for process in list(CHILDREN):
            kill_tree(process)
        os._exit(3)

    timer = threading.Timer(seconds, abort)
    timer.daemon = True
    timer.start()
    return timer


def run_check(args) -> dict:
    """Versions, the FSDP job and throughput (batch 24 and the largest that fits), within --budget-s."""
    began = time.perf_counter()
    print("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in package_versions().items()), flush=True)
    check_requirements(CHECK_REQUIRED, stub_missing=False)
    check_inputs(args)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        sys.exit(
            f"bench_gpu.py --check: no CUDA device visible to torch {torch.__version__}; pass --device cpu for CPU"
        )
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(status="running", budget_s=args.budget_s, argv=sys.argv, stages={})
    watchdog = start_watchdog(args.budget_s + 20, output / "check.json", report)
    try:
        run_stages(args, report, output, device, began)
    finally:
        watchdog.cancel()  # the check returned in time (in a test, pytest lives on after it)
    summary = check_summary(report)
    (output / "summary.txt").write_text(summary)
    print(summary, flush=True)
    return report


def run_stages(args, report: dict, output: Path, device: str, began: float) -> None:
    """Each stage records its JSON file and updates check.json as soon as it ends."""
    import torch
    from transformers import AutoTokenizer

    deadline = began + args.budget_s

    def finish_stage(name: str, data: dict, started: float) -> None:
        data["seconds"] = time.perf_counter() - started
        report["stages"][name] = data
        report["elapsed_s"] = time.perf_counter() - began
        write_json(output / f"{name}.json", data)
        write_json(output / "check.json", report)

    started = time.perf_counter()
    env = environment(device)
    print("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    finish_stage("environment", dict(status="pass", **env), started)

    # FSDP first: its two launches are bounded by timeouts, and the throughput stage then takes whatever is left.
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work_dir) as work:
        try:
            fsdp = run_fsdp(args, Path(work), output, started + args.fsdp_budget_s, device)
        except Exception as error:  # recorded, and the throughput stage still runs
            fsdp = dict(status="fail", error=repr(error)[:1000])
    free_memory(device)  # the random model and the two loaded for the logits comparison
    finish_stage("fsdp", fsdp, started)
    print(f"[gpu_check] FSDP job: {fsdp['status']} {json.dumps(fsdp.get('checks', fsdp.get('error')))}", flush=True)

    started = time.perf_counter()
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    name = env.get("gpu", "cpu")
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    throughput = dict(device=name, torch=torch.__version__, precision="bf16" if bf16 else "fp32", sentences=0)
    throughput.update(peak_bf16_tflops=peak, results=[])
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        rows = encode(read_conll(Path(args.data_dir) / "train.conll", args.sentences), tokenizer)
        throughput["sentences"] = len(rows)
        run_throughput(
            args, Workload(args.model, rows, tokenizer, device, bf16, peak), throughput, output, deadline - 10
        )
        wanted = {
            (c, kind) for c in args.configs for kind in ("fixed", "max") if kind == "fixed" or "max" in args.batch_sizes
        }
        measured = {
            (r["config"], "max" if r.get("largest") else "fixed") for r in throughput["results"] if "tokens_per_s" in r
        }
        throughput["status"] = "pass" if wanted <= measured else "fail"
    except Exception as error:
        throughput.update(status="fail", error=repr(error)[:1000])
    (output / "gpu.md").write_text(markdown(throughput))
    finish_stage("throughput", throughput, started)
    report["status"] = "pass" if all(s.get("status") == "pass" for s in report["stages"].values()) else "fail"
    write_json(output / "check.json", report)


def check_summary(report: dict) -> str:
    """A few lines a person reads first: device, the throughput table, the FSDP verdict, the time used."""
    stages = report["stages"]
    env, fsdp, throughput = stages.get("environment", {}), stages.get("fsdp", {}), stages.get("throughput", {})
    lines = [
        f"GPU check: {report['status']} in {report['elapsed_s']:.0f} s of {report['budget_s']:.0f} s",
        f"device {env.get('gpu', env.get('device'))}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"transformers {env.get('transformers')}, accelerate {env.get('accelerate')}",
        "",
        markdown(throughput) if "results" in throughput else f"throughput: {throughput.get('error', 'not run')}",
    ]
    lines.append(f"FSDP job: {fsdp.get('status')}" + (f" ({fsdp['error']})" if "error" in fsdp else ""))
    if "checks" in fsdp:
        ran = fsdp["ran_as"]
        lines.append(
            f"  ran as {ran['distributed_type']}, checkpoints: {ran['checkpoint_format']}; stopped by signal "
            f"{fsdp['run1']['stopped_by_signal']} at step {fsdp['run1']['stopped_at_step']}, resumed at "
            f"{fsdp['run2']['resumed_at_step']}, ended at {fsdp['run2']['final_step']} of {fsdp['total_steps']}"
        )
        saved = fsdp["saved_model"]
        lines.append(
            f"  model/ in plain transformers ({saved['plain_class']}): logits max |diff| "
            f"{saved['logits_max_abs_diff']:.2e}, weights vs final checkpoint max |diff| "
            f"{saved['weights_max_abs_diff']}"
        )
        lines.append("  " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in fsdp["checks"].items()))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------


def batch_size_arg(text: str) -> int | str:
    if text == "max":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer or 'max'")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="directory with an XLM-R (or BERT) config and fast tokenizer")
    parser.add_argument("--data", help="a PAN-X train.conll (default: train.conll of --data-dir)")
    parser.add_argument("--data-dir", help="a directory with train.conll and validation.conll (--check needs it)")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument(
        "--batch-sizes", type=batch_size_arg, nargs="+", help="sizes, or max (default 24 256; --check: 24 max)"
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
    parser.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"))
    check = parser.add_argument_group("the GPU check (--check)")
    check.add_argument("--check", action="store_true", help="environment, throughput and the FSDP job, as JSON")
    check.add_argument("--fsdp-steps", type=int, default=48, help="optimizer steps of the FSDP job")
    check.add_argument("--fsdp-batch-size", type=int, default=24)
    check.add_argument("--fsdp-eval-samples", type=int, default=200)
    check.add_argument("--fsdp-budget-s", type=float, default=180, help="time limit of the FSDP stage")
    check.add_argument("--fsdp-verify-s", type=float, default=25, help="of it, kept for loading the saved model")
    check.add_argument("--min-stage-s", type=float, default=45, help="do not start a measurement with less left")
    check.add_argument("--work-dir", default=None, help="for the FSDP job's model and checkpoints (default: /tmp)")
    args = parser.parse_args(argv)
    # The check's whole run must fit the 8 minutes it is given; --budget-s is then the hard limit of everything.
    args.budget_s = args.budget_s or (450 if args.check else 420)
    args.batch_sizes = args.batch_sizes or ([24, "max"] if args.check else [24, 256])
    args.configs = args.configs or (CHECK_CONFIGS if args.check else DEFAULT_CONFIGS)
    if args.data is None and args.data_dir is None:
        parser.error("pass --data (a train.conll) or --data-dir")
    if args.check and args.data_dir is None:
        parser.error("--check needs --data-dir (train.conll and validation.conll)")
    args.data = args.data or str(Path(args.data_dir) / "train.conll")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.check:
        return run_check(args)
    check_requirements()

    import torch
    from transformers import AutoTokenizer

    began = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode(read_conll(Path(args.data), args.sentences), tokenizer)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(
        device=name,
        torch=torch.__version__,
        precision="bf16" if bf16 else "fp32",
        sentences=len(rows),
        peak_bf16_tflops=peak,
        results=[],
    )
    print(f"[bench_gpu] {name}, {len(rows)} sentences, precision {report['precision']}", flush=True)
    run_throughput(args, Workload(args.model, rows, tokenizer, device, bf16, peak), report, output, math.inf)
    report["total_s"] = time.perf_counter() - began
    write_json(output / "gpu.json", report)
    (output / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"Device: {report['device']}, torch {report['torch']}, {report['precision']}, "
        f"xlm-roberta-base (random weights), {report['sentences']} PAN-X.en sentences",
        "",
        "| batch | config | real tok/s | x trainer | MFU | padding eff. | peak GPU GiB | wall s |",
        "|---|---|---|---|---|---|---|---|",
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
            lines.append(f"| {batch} | {r['config']} | {why} | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base[row_key(r)]:.2f}" if row_key(r) in base else "-"
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        lines.append(
            f"| {batch} | {r['config']} | {r['tokens_per_s']:,.0f} | {ratio} | {mfu} | "
            f"{r['padding_efficiency']:.3f} | {memory} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train-worker"]:  # one process of the FSDP job, started by accelerate launch
        sys.exit(train_worker(sys.argv[2], sys.argv[3:]))
    sys.exit(0 if main().get("status", "pass") == "pass" else 1)
