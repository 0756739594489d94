"""Training throughput of xlm-roberta-base (random weights, real XLM-R tokenization of PAN-X) on one GPU, bf16.

One command, under 8 minutes on an H100/H200 (the model and data are copied beside the repo because ../shared
does not travel to the GPU machine; see BENCHMARKS.md):
    python benchmarks/bench_gpu.py --model .benchdata/xlm-roberta-base-shape --data .benchdata/panx-en-train.conll \
        --output-dir $OUT
CPU smoke test of the same path (tiny model, a few steps):
    python benchmarks/bench_gpu.py --device cpu --model <tiny model dir> --data <train.conll> --steps 3 --warmup 1

Needs only torch, transformers, tokenizers, numpy (+ accelerate for the Trainer baseline and ner_accel's loop);
it reads CoNLL itself and imports ner_accel from src/ (its alignment, batching, model and training-step code).
`datasets` and `seqeval`, which the training step never calls, are replaced by empty placeholders when absent.

Configurations, each at --batch-sizes (default 24 and 256), on the same sentences and initial weights:
  trainer        the seed recipe: HF Trainer, random batches, DataCollatorForTokenClassification, bf16, the
                 padded model (sdpa attention) as transformers loads it
  ner_accel      ner_accel's batches (length-grouped, padded to a multiple of 8), unpadded forward and step
                 (forward_backward, clip, fused AdamW, schedule) under Accelerate bf16, eager
  ner_accel_padded          the same with the padded model (sdpa): what unpadding is worth on this GPU
  ner_accel_compile         the same with torch.compile(dynamic=True)
  ner_accel_compile_graphs  torch.compile(mode="reduce-overhead", dynamic=True): CUDA graphs per shape
Reported: real (non-padding) tokens/s, model FLOPs utilisation (6 x non-embedding parameters + attention, per real
token, over the GPU's dense bf16 peak), padding efficiency, peak GPU memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REQUIRED = ["torch", "transformers", "tokenizers", "numpy", "accelerate"]
LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
CONFIGS = ["trainer", "ner_accel", "ner_accel_padded", "ner_accel_compile", "ner_accel_compile_graphs"]
PADDED = {"trainer", "ner_accel_padded"}  # configurations that run transformers' padded sdpa model


def check_requirements() -> None:
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"bench_gpu.py needs {', '.join(missing)} (pip install {' '.join(missing)}); nothing was run")
    # Import transformers' Trainer first, so it records datasets as absent; then give the ner_accel modules
    # placeholders to import, and take them away again.
    import transformers.trainer  # noqa: F401

    stubs = []
    for name in ("datasets", "seqeval"):
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
    """Column store with the slice of the datasets.Dataset API that ner_accel.batching.make_loader uses."""

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
    from ner_accel.alignment import encode_batch

    batch = {"tokens": [s["tokens"] for s in sentences], "tags": [s["tags"] for s in sentences]}
    encoded = encode_batch(batch, tokenizer, {label: i for i, label in enumerate(LABELS)}, 512, False)
    return Rows({k: encoded[k] for k in ("input_ids", "attention_mask", "labels", "length")})


def model_flops_per_token(config, mean_length: float) -> float:
    """Training FLOPs per token: 6 x non-embedding weights, plus attention scores and values (12 x L x d x S)."""
    d, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights = layers * (4 * d * d + 2 * d * inner) + d * config.num_labels
    return 6 * weights + 12 * layers * d * mean_length


# ---------------------------------------------------------------------------------------------------------------


def run_trainer(model, rows: Rows, tokenizer, batch_size: int, steps: int, warmup: int, device: str, bf16: bool):
    """The seed recipe with Trainer; timed from the end of step `warmup` to the end of step warmup + steps."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback, TrainingArguments

    seen = {"real": 0, "padded": 0}

    def count(module, args, kwargs):
        if module.training:
            seen["real"] += kwargs["attention_mask"].sum()
            seen["padded"] += kwargs["attention_mask"].numel()

    model.register_forward_pre_hook(count, with_kwargs=True)
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                sync(device)
                marks[state.global_step] = (time.perf_counter(), int(seen["real"]), int(seen["padded"]))

    dataset = [{k: rows.columns[k][i] for k in ("input_ids", "attention_mask", "labels")} for i in range(len(rows))]
    args = TrainingArguments(
        output_dir="/tmp/bench-gpu-trainer",
        log_level="error",
        max_steps=warmup + steps,
        per_device_train_batch_size=batch_size,
        weight_decay=0.01,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        logging_steps=10_000,
        report_to="none",
        seed=42,
        bf16=bf16,
        use_cpu=device == "cpu",
    )
    Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        train_dataset=dataset,
        callbacks=[Clock()],
    ).train()
    (t0, r0, p0), (t1, r1, p1) = marks[warmup], marks[warmup + steps]
    return t1 - t0, r1 - r0, p1 - p0


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
):
    """ner_accel's batches and training step (its own functions), timed over `steps` steps after `warmup`."""
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from transformers import get_scheduler

    from ner_accel.batching import make_loader
    from ner_accel.config import TrainConfig
    from ner_accel.train import build_optimizer, forward_backward

    accelerator = Accelerator(
        mixed_precision="bf16" if bf16 else "no",
        cpu=device == "cpu",
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    loader = make_loader(rows, tokenizer, batch_size, 42, train=True, pad_to_multiple_of=8 if bf16 else None)
    sampler = loader.batch_sampler
    optimizer = build_optimizer(model, TrainConfig(model="bench"))
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=0, num_training_steps=warmup + steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if compile_mode is not None:
        model = torch.compile(model, dynamic=True, mode=compile_mode)
    step, epoch, real, padded, start = 0, 0, 0, 0, None
    while step < warmup + steps:
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
            if step == warmup + steps:
                break
        epoch += 1
    sync(device)
    return time.perf_counter() - start, int(real), int(padded)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="directory with an XLM-R (or BERT) config and fast tokenizer")
    parser.add_argument("--data", required=True, help="a PAN-X train.conll")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[24, 256])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=CONFIGS)
    parser.add_argument(
        "--steps", type=int, default=200, help="timed optimizer steps at batch 24 (scaled down for larger)"
    )
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (compilation, autotuning)")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--budget-s", type=float, default=420, help="skip configurations once this much time is spent")
    parser.add_argument("--output-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    check_requirements()

    import torch
    from transformers import AutoTokenizer

    from ner_accel.model import load_model
    from ner_accel.unpadding import UNPADDED

    began = time.perf_counter()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode(read_conll(Path(args.data), args.sentences), tokenizer)
    torch.manual_seed(0)
    initial = load_model(args.model, LABELS, from_config=True).state_dict()
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

    for batch_size in args.batch_sizes:
        steps = max(min(args.steps, 30), args.steps * 24 // batch_size)  # about the same sentences at any batch
        warmup = max(min(args.warmup, 5), args.warmup * 24 // batch_size)
        for config in args.configs:
            compile_mode = {"ner_accel_compile": "default", "ner_accel_compile_graphs": "reduce-overhead"}.get(config)
            spent = time.perf_counter() - began
            if spent > args.budget_s or (compile_mode and spent > args.budget_s - 90):
                print(f"[bench_gpu] skip {config} at batch {batch_size}: {spent:.0f} s of the budget spent", flush=True)
                continue
            if compile_mode and device != "cuda" and config == "ner_accel_compile_graphs":
                continue  # CUDA graphs need CUDA
            model = load_model(args.model, LABELS, from_config=True, attention="sdpa" if config in PADDED else UNPADDED)
            model.load_state_dict(initial)
            model.to(device)
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            try:
                if config == "trainer":
                    seconds, real, padded = run_trainer(model, rows, tokenizer, batch_size, steps, warmup, device, bf16)
                else:
                    seconds, real, padded = run_ner_accel(
                        model, rows, tokenizer, batch_size, steps, warmup, device, bf16, compile_mode
                    )
            except Exception as error:  # one configuration failing (say, compilation) must not lose the others
                print(f"[bench_gpu] {config} at batch {batch_size} failed: {error!r}", flush=True)
                report["results"].append(dict(config=config, batch_size=batch_size, error=repr(error)[:500]))
                continue
            flops = model_flops_per_token(model.config, real / (steps * batch_size))  # mean real sentence length
            result = dict(
                config=config,
                batch_size=batch_size,
                steps=steps,
                seconds=seconds,
                tokens_per_s=real / seconds,
                padding_efficiency=real / padded,
                wall_s=time.perf_counter() - started,
                peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
            )
            result["mfu"] = result["tokens_per_s"] * flops / (peak * 1e12) if peak else None
            report["results"].append(result)
            print(f"[bench_gpu] {json.dumps(result)}", flush=True)
            del model
            (output / "gpu.json").write_text(json.dumps(report, indent=1))
    report["total_s"] = time.perf_counter() - began
    (output / "gpu.json").write_text(json.dumps(report, indent=1))
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
    base = {
        r["batch_size"]: r["tokens_per_s"] for r in report["results"] if r["config"] == "trainer" and "error" not in r
    }
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['batch_size']} | {r['config']} | failed: {r['error'][:80]} | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base[r['batch_size']]:.2f}" if r["batch_size"] in base else "-"
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        lines.append(
            f"| {r['batch_size']} | {r['config']} | {r['tokens_per_s']:,.0f} | {ratio} | {mfu} | "
            f"{r['padding_efficiency']:.3f} | {memory} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
