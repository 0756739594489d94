"""How one ner_accel training step splits into forward, backward, gradient clipping and the optimizer step.

Default: multilingual-e5-small (converted once into the machine's cache, see shared_models.py) on PAN-X de,
batch 24, 5 warm-up and 30 timed steps, at fp32 and at bf16 autocast:
    python benchmarks/step_profile.py
Any model and data directory:
    python benchmarks/step_profile.py --model DIR --data-dir DIR --steps 30 --warmup 5 --precisions no bf16

The step is ner_accel's own: train.set_up's data (tokenized, length-grouped batches), model (unpadded forward),
AdamW and schedule under an Accelerator at each precision, then forward_backward, the Accelerator's
clipping (StepGradients.clip), and the optimizer step with the schedule's step and zero_grad (the "optimizer" phase). Batches
are collated before the clock starts; a hook on the model splits forward_backward where the model returns its
loss. On one CPU process the step computes and applies the word embeddings' gradient by rows (gradients.py); what
the dense update of that matrix would cost is measured with two more fused AdamW instances over one step's dense
gradients, one over that matrix alone and one over every other parameter. --freeze-word-embeddings (train's
flag) shows the step without them. Timings are means over the timed steps; on a shared CPU they move with the load
(printed), and --threads 1 keeps other processes from stalling torch's threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
PHASES = ("forward", "backward", "clip", "optimizer")


class ForwardClock:
    """Hooks on the model: the time its forward returns (the loss included), for splitting forward_backward."""

    def __init__(self, model, sync) -> None:
        self.ended, self.sync = None, sync
        model.register_forward_hook(self.end)

    def end(self, module, inputs, outputs) -> None:
        self.sync()
        self.ended = time.perf_counter()


def training_batches(run, count: int) -> list[dict]:
    """The first `count` batches the training loop would see (epochs repeat when one is too short)."""

    def epochs():
        for epoch in itertools.count():
            run.batches.set_epoch(epoch)
            run.train_loader.set_epoch(epoch)
            yield from run.train_loader

    return list(itertools.islice(epochs(), count))


def time_steps(config, steps: int, warmup: int) -> dict:
    """Mean milliseconds of each phase of ner_accel's step at the config's precision, over `steps` after `warmup`."""
    import torch

    from ner_accel import train

    accelerator = train.make_accelerator(config.mixed_precision)
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else lambda: None
    torch.manual_seed(config.seed)
    run = train.set_up(config, accelerator)  # data, model, AdamW, schedule and prepare, as train() does
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    model.train()
    batches = training_batches(run, warmup + steps)
    clock = ForwardClock(model, sync)
    times = {phase: [] for phase in PHASES}
    for index, batch in enumerate(batches):
        sync()
        start = time.perf_counter()
        train.forward_backward(model, [batch], accelerator)
        sync()
        backward_end = time.perf_counter()
        run.gradients.clip(config.max_grad_norm)  # as train's loop does (the embedding's rows, see gradients.py)
        sync()
        clip_end = time.perf_counter()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        step_end = time.perf_counter()
        if index >= warmup:
            for phase, seconds in zip(
                PHASES, (clock.ended - start, backward_end - clock.ended, clip_end - backward_end, step_end - clip_end)
            ):
                times[phase].append(1000 * seconds)
    timed = batches[warmup:]
    result = {phase: statistics.mean(values) for phase, values in times.items()}
    result["step"] = sum(result[phase] for phase in PHASES)
    result["share"] = {phase: result[phase] / result["step"] for phase in PHASES}
    result["real_tokens_per_step"] = statistics.mean(int(b["attention_mask"].sum()) for b in timed)
    result["padded_tokens_per_step"] = statistics.mean(b["attention_mask"].numel() for b in timed)
    result["real_tokens_per_s"] = 1000 * result["real_tokens_per_step"] / result["step"]
    result.update(precision=accelerator.mixed_precision, steps=len(timed), warmup=warmup)
    groups = optimizer.param_groups
    optimizer.state.clear()  # its moments (twice the model's size): the two optimizers below allocate their own
    embedding = accelerator.unwrap_model(model).get_input_embeddings().weight
    result["embedding_optimizer"] = (
        embedding_share(run, groups, batches[-1], warmup, steps) if embedding.requires_grad else None
    )
    return result


def embedding_share(run, groups: list[dict], batch: dict, warmup: int, steps: int) -> dict:
    """Fused AdamW over the word-embedding matrix alone vs over every other parameter, on one step's gradients."""
    import torch

    from ner_accel import train

    model, accelerator = run.model, run.accelerator

    embedding = accelerator.unwrap_model(model).get_input_embeddings().weight
    options = {k: v for k, v in groups[0].items() if k in ("lr", "betas", "eps")}
    alone = [
        {"params": [embedding], "weight_decay": g["weight_decay"]}
        for g in groups
        if any(p is embedding for p in g["params"])
    ]
    rest = [
        {"params": [p for p in g["params"] if p is not embedding], "weight_decay": g["weight_decay"]}
        for g in groups
        if any(p is not embedding for p in g["params"])
    ]
    # The dense gradient of the whole matrix, as AdamW would read it without ner_accel's rows (gradients.py).
    train.StepGradients(accelerator, model, embedding_rows=False)
    train.forward_backward(model, [batch], accelerator)  # the gradients every timed step below applies
    optimizers = {
        "embedding": torch.optim.AdamW(alone, fused=True, **options),
        "rest": torch.optim.AdamW(rest, fused=True, **options),
    }
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else lambda: None
    times = {name: [] for name in optimizers}
    for index in range(warmup + steps):
        for name, stepper in optimizers.items():  # interleaved, so load on the machine hits both alike
            sync()
            start = time.perf_counter()
            stepper.step()
            sync()
            if index >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    result = {name: statistics.mean(values) for name, values in times.items()}
    result["embedding_share"] = result["embedding"] / (result["embedding"] + result["rest"])
    result["embedding_parameters"] = embedding.numel()
    result["all_parameters"] = sum(p.numel() for p in model.parameters())
    return result


def markdown(report: dict) -> str:
    lines = [
        f"### Step split: {report['settings']}",
        "",
        f"Machine: {report['machine']}; load average before {report['load_before'][0]:.2f}, "
        f"after {report['load_after'][0]:.2f}. Mean ms per step over {report['steps']} steps after "
        f"{report['warmup']} warm-up steps (% of the step).",
        "",
        "| precision | forward | backward | clip | optimizer | step | real tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        cells = " | ".join(f"{run[p]:,.1f} ({100 * run['share'][p]:.0f} %)" for p in PHASES)
        lines.append(f"| {run['precision']} | {cells} | {run['step']:,.1f} | {run['real_tokens_per_s']:,.0f} |")
    if any(run["embedding_optimizer"] for run in report["runs"]):
        lines += [
            "",
            "Fused AdamW over dense gradients (the update without rows), the word-embedding matrix alone vs the rest:",
            "",
        ]
    for run in report["runs"]:
        e = run["embedding_optimizer"]
        if e is None:
            continue
        lines.append(
            f"- {run['precision']}: embedding {e['embedding']:,.1f} ms, the rest {e['rest']:,.1f} ms: "
            f"{100 * e['embedding_share']:.0f} % of the optimizer's time for "
            f"{100 * e['embedding_parameters'] / e['all_parameters']:.0f} % of the parameters"
        )
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: multilingual-e5-small from the machine's cache)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "panx" / "de"))
    parser.add_argument("--train-samples", type=int, default=8000, help="sentences the batches are drawn from")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (allocations, kernel choice)")
    parser.add_argument("--precisions", nargs="+", choices=["no", "bf16", "fp16"], default=["no", "bf16"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, help="torch threads (default torch's: one per core)")
    parser.add_argument(
        "--freeze-word-embeddings", action="store_true", help="ner_accel.train's flag: the step without their cost"
    )
    parser.add_argument("--output", help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.model is None:
        from shared_models import multilingual_e5_small  # a sibling script: benchmarks/ is on sys.path

        args.model = str(multilingual_e5_small())

    from ner_accel import train

    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["HF_DATASETS_CACHE"] = str(Path(scratch) / "cache")  # tokenized once, not into ~/.cache
        for precision in args.precisions:
            config = train.parse_config(
                ["--model", args.model, "--data-dir", args.data_dir, "--output-dir", scratch, "--run-name", precision]
                + ["--max-train-samples", str(args.train_samples), "--max-eval-samples", "1"]
                + ["--per-device-train-batch-size", str(args.batch_size), "--seed", str(args.seed)]
                + ["--mixed-precision", precision]
                + (["--freeze-word-embeddings"] if args.freeze_word_embeddings else [])
            )
            print(f"[step_profile] {precision}: {args.warmup} + {args.steps} steps", file=sys.stderr, flush=True)
            runs.append(time_steps(config, args.steps, args.warmup))
    report = dict(
        settings=f"{Path(args.model).name} on {Path(args.data_dir).name}, batch {args.batch_size}"
        + (", word embeddings frozen" if args.freeze_word_embeddings else ""),
        machine=machine(),
        load_before=load_before,
        load_after=os.getloadavg(),
        steps=args.steps,
        warmup=args.warmup,
        runs=runs,
    )
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
