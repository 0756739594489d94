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

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from rich.console import Console
from rich.logging import RichHandler
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from .artifacts import CONFIG_FILE, check_output_dir, check_run_dir, save_final, write_json
from .batching import make_loader, pad_multiple, padding_efficiency
from .checkpoint import Checkpoints, TrainerState, load_trainer_state, resolve_resume
from .config import TrainConfig, parse_config
from .data import load_corpus
from .encoding import encode_dataset
from .errors import UsageError
from .evaluation import evaluate
from .metrics import metrics_table
from .model import load_model, load_tokenizer
from .optimization import LossMeter, accumulation_windows, build_optimizer, forward_backward
from .precision import make_accelerator
from .signals import Preempted, StopSignal

logger = get_logger("ner_accel")


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
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # save_state logs every file it writes
    return console


def build_loaders(config: TrainConfig, accelerator: Accelerator, tokenizer, corpus) -> tuple:
    """Tokenize once (main process first; the others read its cache) and batch: (train rows, train, eval loaders)."""
    max_length = min(config.max_length or tokenizer.model_max_length, tokenizer.model_max_length, 512)
    with accelerator.main_process_first():
        train_rows = encode_dataset(
            corpus.train, tokenizer, corpus.labels, max_length, config.label_all_tokens, "train"
        )
        # Validation is scored per word (first sub-token) whatever the training labels, so F1 stays comparable.
        eval_rows = {
            name: encode_dataset(words, tokenizer, corpus.labels, max_length, False, f"{name}/validation")
            for name, words in corpus.validation.items()
        }
    world = accelerator.num_processes
    pad_to = pad_multiple(accelerator.device, accelerator.mixed_precision)
    common = dict(
        tokenizer=tokenizer, seed=config.seed, pad_to_multiple_of=pad_to, num_workers=config.dataloader_num_workers
    )
    train_loader = make_loader(
        train_rows,
        batch_size=config.per_device_train_batch_size * world,
        train=True,
        group_by_length=config.group_by_length,
        num_processes=world,
        accumulation=config.gradient_accumulation_steps,
        **common,
    )
    eval_loaders = {
        name: make_loader(rows, batch_size=config.per_device_eval_batch_size * world, train=False, **common)
        for name, rows in eval_rows.items()
    }
    return train_rows, train_loader, eval_loaders


def train(config: TrainConfig) -> dict:
    """Run the whole job; return the final metrics."""
    accelerator = make_accelerator(config.mixed_precision)
    console = setup_logging(accelerator)
    set_seed(config.seed)
    run_dir = config.run_dir
    check_output_dir(run_dir, "--output-dir/--run-name")
    check_run_dir(run_dir, config.overwrite, resuming=config.resume is not None)
    resume_from = resolve_resume(config.resume, run_dir) if config.resume else None

    # Data: words from the Hub or local files, then tokenized, cached, length-grouped batches.
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    corpus = load_corpus(
        config.data_dir,
        config.dataset,
        config.languages,
        config.max_train_samples,
        config.max_eval_samples,
        config.language_fractions,
        config.seed,
    )
    settings = config.loop_settings(accelerator.num_processes)
    if resume_from:
        state = load_trainer_state(resume_from, corpus.labels, settings)
    else:
        state = TrainerState(labels=corpus.labels, settings=settings)
    train_rows, train_loader, eval_loaders = build_loaders(config, accelerator, tokenizer, corpus)
    sampler, world = train_loader.batch_sampler, accelerator.num_processes

    # Model, optimizer, schedule; then one prepare, then the saved state if resuming.
    model = load_model(config.model, corpus.labels, config.trust_remote_code, attention=config.attention)
    id2label = model.config.id2label
    optimizer = build_optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.num_train_epochs
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        config.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    model, optimizer, train_loader, scheduler, *prepared_eval = accelerator.prepare(
        model, optimizer, train_loader, scheduler, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, prepared_eval))
    checkpoints = Checkpoints(run_dir, config.keep_checkpoints)
    if config.overwrite and not resume_from:  # only now, once data and model have loaded without error
        checkpoints.clear(accelerator)
    if resume_from:
        accelerator.load_state(str(resume_from))
        logger.info(
            f"resumed from {resume_from} at step {state.step} (epoch {state.epoch + 1}, batch {state.batches_in_epoch})"
        )

    logger.info(
        f"ner_accel: {config.model} | {len(train_rows)} train sentences, {len(corpus.labels)} labels | "
        f"{world} process(es) x {config.per_device_train_batch_size} x {config.gradient_accumulation_steps} accumulation = "
        f"{config.per_device_train_batch_size * world * config.gradient_accumulation_steps} sentences/step | "
        f"{total_steps} steps | precision {accelerator.mixed_precision} | padding efficiency "
        f"{padding_efficiency(train_rows['length'], list(sampler)):.3f} | run dir {run_dir}"
    )
    # A two-batch evaluation first: an evaluation bug fails at step 0, not after the first epoch.
    evaluate(model, next(iter(eval_loaders.values())), accelerator, id2label, max_batches=2)

    def evaluate_and_track() -> bool:
        """Evaluate, record, keep track of the best F1; True when patience has run out."""
        results = run_evaluation(model, eval_loaders, accelerator, id2label)
        state.history.append({"step": state.step, "epoch": state.epoch, "validation": results})
        log_results(results, console, accelerator, f"step {state.step}")
        f1 = results.get("mean_f1", next(iter(results.values()))["f1"] if results else 0.0)
        improved = f1 > state.best_f1
        state.best_f1 = max(f1, state.best_f1)
        state.evaluations_since_best = 0 if improved else state.evaluations_since_best + 1
        losses.mean(accelerator, state.step)  # never checkpoint a diverged model
        checkpoints.save(accelerator, state, is_best=improved)
        return config.patience is not None and state.evaluations_since_best >= config.patience

    losses, out_of_patience = LossMeter(accelerator.device), False
    bar = dict(total=total_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train")
    with StopSignal() as stop, tqdm(**bar) as progress:
        for epoch in range(state.epoch, config.num_train_epochs):
            sampler.set_epoch(epoch)
            train_loader.set_epoch(epoch)
            loader = (
                accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
                if state.batches_in_epoch
                else train_loader
            )
            loader.set_epoch(epoch)
            for window in accumulation_windows(loader, config.gradient_accumulation_steps):
                losses.add(forward_backward(model, window, accelerator))
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step, state.batches_in_epoch = state.step + 1, state.batches_in_epoch + len(window)
                progress.update(1)
                if state.step % config.logging_steps == 0:  # the only routine host sync of a step
                    logged = {
                        "step": state.step,
                        "loss": losses.mean(accelerator, state.step),
                        "learning_rate": scheduler.get_last_lr()[0],
                    }
                    progress.set_postfix(loss=f"{logged['loss']:.4f}", lr=f"{logged['learning_rate']:.2e}")
                    state.history.append(logged)
                    losses.reset()
                if config.eval_steps and state.step % config.eval_steps == 0:
                    out_of_patience = evaluate_and_track()
                elif config.checkpoint_steps and state.step % config.checkpoint_steps == 0:
                    losses.mean(accelerator, state.step)  # never checkpoint a diverged model
                    checkpoints.save(accelerator, state)
                if stop.requested(accelerator, state.step):
                    raise Preempted(checkpoints.save(accelerator, state), stop.received)
                if out_of_patience:
                    break
            if not out_of_patience:
                state.epoch, state.batches_in_epoch = epoch + 1, 0
                if not config.eval_steps:
                    out_of_patience = evaluate_and_track()
            if out_of_patience:  # stop before another step is taken: the last evaluated step is the last step
                logger.info(f"early stop: no better F1 in {config.patience} evaluations")
                break

    evaluations = {entry["step"]: entry["validation"] for entry in state.history if "validation" in entry}
    if state.step not in evaluations:  # --eval-steps did not divide the last steps
        evaluate_and_track()
        evaluations[state.step] = state.history[-1]["validation"]
    final = evaluations[state.step]
    if config.load_best and state.best_checkpoint:
        accelerator.load_state(str(checkpoints.root / state.best_checkpoint))
        final = evaluations[int(state.best_checkpoint.split("-")[1])]
    # FSDP shards the weights: gather the full state dict (a collective, so on every process) before saving.
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        write_json(
            run_dir / CONFIG_FILE,
            {
                **config.to_dict(),
                "num_processes": world,
                "mixed_precision": accelerator.mixed_precision,
                "labels": corpus.labels,
            },
        )
        save_final(run_dir, accelerator.unwrap_model(model), tokenizer, state.history, final, state_dict)
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
    except Preempted as stopped:
        print(
            f"stopped by signal {stopped.signal_number}; checkpoint saved to {stopped.checkpoint}. "
            "Resume with the same command plus --resume latest",
            file=sys.stderr,
        )
        return 128 + stopped.signal_number
    except FloatingPointError as error:
        print(f"error: {error}; the last good checkpoint is kept (resume with --resume latest)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
