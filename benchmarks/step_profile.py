"""How one ner_accel training step splits into forward, backward, gradient clipping and the optimizer step.

Default: multilingual-e5-small (converted once into the machine's cache, see shared_models.py) on PAN-X de,
batch 24, 5 warm-up and 30 timed steps, at fp32 and at bf16 autocast:
    python benchmarks/step_profile.py
Any model and data directory:
    python benchmarks/step_profile.py --model DIR --data-dir DIR --steps 30 --warmup 5 --precisions no bf16
Run as a file it puts the checkout's root and src/ first on the path; `python -m benchmarks.step_profile` (from the
checkout's root) needs ner_accel installed or PYTHONPATH=src.

The step is ner_accel's own: train.set_up's data (tokenized, length-grouped batches), model (unpadded forward, the
word embeddings' used rows trained), AdamW and schedule under an Accelerator at each precision; the micro-batches
of each step come from train.remaining_steps, as the loop gets them, collated before the clock starts. Each step
runs the lines of train's loop: forward_backward, `accelerator.clip_grad_norm_` when max_grad_norm is on (train's
default, 1.0: the "clip" phase), then optimizer step, schedule step and zero_grad (the "optimizer" phase). A hook on the
model splits forward_backward where the model returns its loss. What the trained embedding rows still cost AdamW
is measured with two more fused AdamW instances over one step's gradients, one over the trained rows alone and one
over every other trainable parameter (the frozen full matrix has neither gradient nor moments).
--freeze-word-embeddings (train's flag) shows the step without them. Timings are means over the timed steps; on a
shared CPU they move with the load (printed), and --threads 1 keeps other processes from stalling torch's threads.
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

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.machine import describe, one_line
from benchmarks.shared_models import SHARED, multilingual_e5_small
from benchmarks.tokens import TokenCount

PHASES = ("forward", "backward", "clip", "optimizer")


class ForwardClock:
    """Hooks on the model: the time its forward returns (the loss included), for splitting forward_backward."""

    def __init__(self, model, sync) -> None:
        self.ended, self.sync = None, sync
        model.register_forward_hook(self.end)

    def end(self, module, inputs, outputs) -> None:
        self.sync()
        self.ended = time.perf_counter()


def time_steps(config, steps: int, warmup: int) -> dict:
    """Mean milliseconds of each phase of ner_accel's step at the config's precision, over `steps` after `warmup`."""
    import torch

    from ner_accel.train import remaining_steps, set_up
    from ner_accel.training.optimization import forward_backward
    from ner_accel.training.precision import make_accelerator

    accelerator = make_accelerator(config.mixed_precision)
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else lambda: None
    torch.manual_seed(config.seed)
    run = set_up(config, accelerator)  # data, model, AdamW, schedule and prepare, as train() does
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    model.train()
    step_batches = list(itertools.islice(remaining_steps(run), warmup + steps))
    clock = ForwardClock(model, sync)
    times = {phase: [] for phase in PHASES}
    for index, micro_batches in enumerate(step_batches):
        sync()
        start = time.perf_counter()
        forward_backward(model, micro_batches, accelerator)
        sync()
        backward_end = time.perf_counter()
        if config.max_grad_norm:  # train's loop, line for line
            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        sync()
        clip_end = time.perf_counter()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        step_end = time.perf_counter()
        if index >= warmup:  # with accumulation, "forward" ends with the last micro-batch's (earlier backwards in it)
            ends = (clock.ended - start, backward_end - clock.ended, clip_end - backward_end, step_end - clip_end)
            for phase, seconds in zip(PHASES, ends):
                times[phase].append(1000 * seconds)
    timed = step_batches[warmup:]
    tokens = [TokenCount() for _ in timed]
    for count, micro_batches in zip(tokens, timed):
        for batch in micro_batches:
            count.add(batch["attention_mask"])
    result = {phase: statistics.mean(values) for phase, values in times.items()}
    result["step"] = sum(result[phase] for phase in PHASES)
    result["share"] = {phase: result[phase] / result["step"] for phase in PHASES}
    result["real_tokens_per_step"] = statistics.mean(count.read()[0] for count in tokens)
    result["padded_tokens_per_step"] = statistics.mean(count.read()[1] for count in tokens)
    result["real_tokens_per_s"] = 1000 * result["real_tokens_per_step"] / result["step"]
    result.update(precision=accelerator.mixed_precision, steps=len(timed), warmup=warmup)
    groups = optimizer.param_groups
    optimizer.state.clear()  # its moments: the two optimizers below allocate their own
    result["embedding_optimizer"] = embedding_share(run, groups, step_batches[-1], warmup, steps)
    return result


def embedding_share(run, groups: list[dict], micro_batches: list[dict], warmup: int, steps: int) -> dict | None:
    """Fused AdamW over the trained word-embedding rows alone vs over every other trainable parameter, on one
    step's gradients; None when the word embeddings are frozen (no rows are trained)."""
    import torch

    from ner_accel.modeling.trained_rows import TRAINED
    from ner_accel.training.optimization import forward_backward

    model, accelerator = run.model, run.accelerator
    embeddings = accelerator.unwrap_model(model).get_input_embeddings()
    rows = getattr(embeddings, TRAINED, None)
    if rows is None or not rows.requires_grad:
        return None
    options = {k: v for k, v in groups[0].items() if k in ("lr", "betas", "eps")}
    alone = [
        {"params": [rows], "weight_decay": g["weight_decay"]} for g in groups if any(p is rows for p in g["params"])
    ]
    rest = [
        {"params": [p for p in g["params"] if p is not rows], "weight_decay": g["weight_decay"]}
        for g in groups
        if any(p is not rows for p in g["params"])
    ]
    forward_backward(model, micro_batches, accelerator)  # the gradients every timed step below applies
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
    result["trained_rows"] = len(rows)
    result["embedding_parameters"] = rows.numel()  # what AdamW updates of the word embeddings
    result["embedding_matrix_parameters"] = embeddings.weight.numel()  # the full matrix, frozen
    result["trainable_parameters"] = sum(p.numel() for g in groups for p in g["params"])
    return result


def markdown(report: dict) -> str:
    lines = [
        f"### Step split: {report['settings']}",
        "",
        f"Machine: {one_line(report['machine'])}, {report['machine']['torch_threads']} torch thread(s); load average "
        f"before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}. Mean ms per step over "
        f"{report['steps']} steps after {report['warmup']} warm-up steps (% of the step).",
        "",
        "| precision | forward | backward | clip | optimizer | step | real tok/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        cells = " | ".join(f"{run[p]:,.1f} ({100 * run['share'][p]:.0f} %)" for p in PHASES)
        lines.append(f"| {run['precision']} | {cells} | {run['step']:,.1f} | {run['real_tokens_per_s']:,.0f} |")
    if any(run["embedding_optimizer"] for run in report["runs"]):
        lines += ["", "Fused AdamW over one step's gradients, the trained word-embedding rows alone vs the rest:", ""]
    for run in report["runs"]:
        e = run["embedding_optimizer"]
        if e is None:
            continue
        lines.append(
            f"- {run['precision']}: embedding rows {e['embedding']:,.1f} ms, the rest {e['rest']:,.1f} ms: "
            f"{100 * e['embedding_share']:.0f} % of the optimizer's time for "
            f"{100 * e['embedding_parameters'] / e['trainable_parameters']:.0f} % of the trained parameters "
            f"({e['trained_rows']:,} rows, {100 * e['embedding_parameters'] / e['embedding_matrix_parameters']:.0f} "
            "% of the matrix)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: multilingual-e5-small from the machine's cache)")
    parser.add_argument("--data-dir", default=str(SHARED / "data" / "panx" / "de"))
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
        args.model = str(multilingual_e5_small())

    from ner_accel.options.train_config import parse_config
    from ner_accel.rundir.run_lock import release_run_locks

    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["HF_DATASETS_CACHE"] = str(Path(scratch) / "cache")  # tokenized once, not into ~/.cache
        for precision in args.precisions:
            # As many epochs as steps: remaining_steps then yields every step asked for, however small the data.
            config = parse_config(
                ["--model", args.model, "--data-dir", args.data_dir, "--output-dir", scratch, "--run-name", precision]
                + ["--max-train-samples", str(args.train_samples), "--max-eval-samples", "1"]
                + ["--per-device-train-batch-size", str(args.batch_size), "--seed", str(args.seed)]
                + ["--num-train-epochs", str(args.warmup + args.steps), "--mixed-precision", precision]
                + (["--freeze-word-embeddings"] if args.freeze_word_embeddings else [])
            )
            print(f"[step_profile] {precision}: {args.warmup} + {args.steps} steps", file=sys.stderr, flush=True)
            try:
                runs.append(time_steps(config, args.steps, args.warmup))
            finally:
                release_run_locks()  # set_up locked the run directory, as train does
    report = dict(
        settings=f"{Path(args.model).name} on {Path(args.data_dir).name}, batch {args.batch_size}"
        + (", word embeddings frozen" if args.freeze_word_embeddings else ""),
        machine=describe(),
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
