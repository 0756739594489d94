"""Fine-tune a token classifier for NER with a hand-written Accelerate loop.

One CPU or GPU (debugging):
    python -m ner_accel.train --model ../shared/models/minilm-l6-h384-uncased --data-dir ../shared/data/panx/en
One node, N GPUs:
    accelerate launch --config_file launch/multi_gpu.yaml -m ner_accel.train --languages de
N nodes (run on each node, or through launch/slurm.sbatch):
    accelerate launch --config_file launch/multi_node.yaml --machine_rank $RANK -m ner_accel.train
"""

from __future__ import annotations

import logging
import math
import sys
from contextlib import nullcontext

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from rich.console import Console
from rich.logging import RichHandler
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from .alignment import IGNORE
from .artifacts import CONFIG_FILE, check_run_dir, save_final, write_json
from .batching import make_loader, padding_efficiency
from .config import TrainConfig, UsageError, parse_config
from .data import load_corpus
from .encoding import encode_dataset
from .evaluation import evaluate
from .metrics import metrics_table
from .model import load_model, load_tokenizer
from .precision import resolve_mixed_precision

logger = get_logger("ner_accel")


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and LayerNorm weights are not decayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, foreach=True)


def accumulation_windows(loader, size: int):
    """Group micro-batches into the lists that make one optimizer step each (the last may be shorter)."""
    window = []
    for batch in loader:
        window.append(batch)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def forward_backward(model, window: list[dict], accelerator: Accelerator) -> torch.Tensor:
    """Backpropagate one optimizer step's micro-batches; return this process's share of the step's mean loss.

    The loss is summed over labelled tokens and divided by the labelled tokens of the whole effective batch
    (every micro-batch on every process), so N processes or K accumulation steps give the gradient of one big
    batch even when micro-batches hold different numbers of labelled tokens. DDP averages gradients over
    processes, hence the factor num_processes.
    """
    labelled = accelerator.reduce(sum((batch["labels"] != IGNORE).sum() for batch in window), "sum").clamp(min=1)
    step_loss = torch.zeros((), device=accelerator.device)
    for index, batch in enumerate(window):
        # Only the last micro-batch all-reduces gradients; the others accumulate locally.
        with nullcontext() if index == len(window) - 1 else accelerator.no_sync(model):
            loss = model(**batch, num_items_in_batch=labelled).loss
            accelerator.backward(loss * accelerator.num_processes)
        step_loss += loss.detach()
    return step_loss


def run_evaluation(model, eval_loaders: dict, accelerator: Accelerator, id2label: dict) -> dict[str, dict]:
    """Metrics per evaluation set (language), plus their mean F1 when there are several."""
    results = {name: evaluate(model, loader, accelerator, id2label) for name, loader in eval_loaders.items()}
    if len(results) > 1:
        results["mean_f1"] = sum(r["f1"] for r in results.values()) / len(results)
    return results


def log_results(results: dict[str, dict], console: Console, accelerator: Accelerator, title: str) -> None:
    if accelerator.is_main_process:
        for name, metrics in results.items():
            if name != "mean_f1":
                console.print(metrics_table(metrics, f"{title}: {name}"))
        if "mean_f1" in results:
            console.print(f"{title}: mean F1 over {len(results) - 1} languages = {results['mean_f1']:.4f}")


def setup_logging(accelerator: Accelerator) -> Console:
    console = Console(stderr=True)
    logging.basicConfig(
        level=logging.INFO if accelerator.is_main_process else logging.ERROR,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
        force=True,
    )
    hf_logging.set_verbosity_error()
    return console


def train(config: TrainConfig) -> dict:
    """Run the whole job; return the final metrics."""
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        dataloader_config=DataLoaderConfiguration(split_batches=True),  # batches are global; see batching.py
    )
    console = setup_logging(accelerator)
    set_seed(config.seed)
    run_dir = config.run_dir
    check_run_dir(run_dir, config.overwrite, resuming=config.resume is not None)

    # Data: read words, tokenize once (main process first, the others read its cache).
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    corpus = load_corpus(
        config.data_dir, config.dataset, config.languages, config.max_train_samples, config.max_eval_samples,
        config.language_fractions, config.seed,
    )
    max_length = min(config.max_length or tokenizer.model_max_length, tokenizer.model_max_length, 512)
    with accelerator.main_process_first():
        train_rows = encode_dataset(corpus.train, tokenizer, corpus.labels, max_length, config.label_all_tokens, "train")
        eval_rows = {
            name: encode_dataset(words, tokenizer, corpus.labels, max_length, config.label_all_tokens, f"{name}/validation")
            for name, words in corpus.validation.items()
        }
    world = accelerator.num_processes
    pad_to = 8 if accelerator.mixed_precision != "no" else None
    train_loader = make_loader(
        train_rows, tokenizer, config.per_device_train_batch_size * world, config.seed, train=True,
        group_by_length=config.group_by_length, num_processes=world, pad_to_multiple_of=pad_to,
        num_workers=config.dataloader_num_workers,
    )
    sampler = train_loader.batch_sampler
    eval_loaders = {
        name: make_loader(rows, tokenizer, config.per_device_eval_batch_size * world, config.seed, train=False,
                          pad_to_multiple_of=pad_to, num_workers=config.dataloader_num_workers)
        for name, rows in eval_rows.items()
    }

    # Model, optimizer, schedule; then one prepare.
    model = load_model(config.model, corpus.labels, config.trust_remote_code)
    id2label = model.config.id2label
    optimizer = build_optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.num_train_epochs
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler, *prepared_eval = accelerator.prepare(
        model, optimizer, train_loader, scheduler, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, prepared_eval))

    logger.info(
        f"ner_accel: {config.model} | {len(train_rows)} train sentences, {len(corpus.labels)} labels | "
        f"{world} process(es) x {config.per_device_train_batch_size} x {config.gradient_accumulation_steps} accumulation = "
        f"{config.per_device_train_batch_size * world * config.gradient_accumulation_steps} sentences/step | "
        f"{total_steps} steps | precision {accelerator.mixed_precision} | padding efficiency "
        f"{padding_efficiency(train_rows['length'], list(sampler)):.3f} | run dir {run_dir}",
    )
    # A two-batch evaluation first: an evaluation bug fails at step 0, not after the first epoch.
    evaluate(model, next(iter(eval_loaders.values())), accelerator, id2label, max_batches=2)

    history: list[dict] = []
    step, running_loss, since_log = 0, torch.zeros((), device=accelerator.device), 0
    progress = tqdm(total=total_steps, disable=not accelerator.is_local_main_process, desc="train")
    for epoch in range(config.num_train_epochs):
        sampler.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        for window in accumulation_windows(train_loader, config.gradient_accumulation_steps):
            running_loss += forward_backward(model, window, accelerator)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, since_log = step + 1, since_log + 1
            progress.update(1)
            if step % config.logging_steps == 0:  # the only host sync of a training step
                loss = accelerator.reduce(running_loss, "sum").item() / since_log
                if not math.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss {loss} in the {since_log} steps up to step {step}")
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                history.append({"step": step, "epoch": epoch, "loss": loss, "learning_rate": scheduler.get_last_lr()[0]})
                running_loss.zero_()
                since_log = 0
            if config.eval_steps and step % config.eval_steps == 0:
                results = run_evaluation(model, eval_loaders, accelerator, id2label)
                history.append({"step": step, "epoch": epoch, "validation": results})
                log_results(results, console, accelerator, f"step {step}")
        if not config.eval_steps:
            results = run_evaluation(model, eval_loaders, accelerator, id2label)
            history.append({"step": step, "epoch": epoch + 1, "validation": results})
            log_results(results, console, accelerator, f"epoch {epoch + 1}")
    progress.close()

    final = history[-1]["validation"] if "validation" in history[-1] else run_evaluation(
        model, eval_loaders, accelerator, id2label
    )
    if accelerator.is_main_process:
        write_json(run_dir / CONFIG_FILE, {**config.to_dict(), "num_processes": world,
                                            "mixed_precision": accelerator.mixed_precision, "labels": corpus.labels})
        save_final(run_dir, accelerator.unwrap_model(model), tokenizer, history, final)
        logger.info(f"saved model, metrics and report to {run_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 0 on success, 2 on bad input (one line on stderr)."""
    try:
        train(parse_config(argv))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
