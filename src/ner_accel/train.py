"""Fine-tune a token classifier for NER with a hand-written Accelerate loop.

One CPU or GPU (debugging):
    python -m ner_accel.train --model ../shared/models/minilm-l6-h384-uncased --data-dir ../shared/data/panx/en
One node, N GPUs:
    accelerate launch --config_file launch/multi_gpu.yaml -m ner_accel.train --languages de
N nodes (run on each node, or through launch/slurm.sbatch):
    accelerate launch --config_file launch/multi_node.yaml --machine_rank $RANK -m ner_accel.train

`train()` is the whole job: set up, then one optimizer step per turn of the loop (forward and backward over the
step's micro-batches, clip, step, schedule, log, evaluate, checkpoint), then the final evaluation and save.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from rich.console import Console
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from .data.batching import LengthGroupedBatches, padding_efficiency
from .data.corpus import Corpus, load_corpus
from .data.loaders import build_loaders
from .errors import Stopped, WriteFailed, run_command
from .evaluation.scoring import EvaluationSet, score, score_sets
from .modeling.loading import batch_packing, load_model, load_tokenizer, resolve_attention
from .modeling.trained_rows import train_only_used_rows, with_full_embedding
from .options.train_config import TrainConfig, parse_config
from .reporting.console import print_results, print_summary, setup_logging
from .reporting.html_report import render_html
from .reporting.hub_upload import check_push_target, push_to_hub
from .reporting.model_card import model_card
from .reporting.tracking import closed_at_exit, evaluation_scalars, resolve_trackers, start_tracking
from .rundir.artifacts import CONFIG_FILE, MODEL_DIR, RUN_REPORT, check_run_dir, save_final
from .rundir.checkpoint import Checkpoints, load_trainer_state, resolve_resume, resume_hint
from .rundir.files import check_output_dir, write_json
from .rundir.run_lock import lock_run_dir, release_run_locks
from .training.compilation import compile_layers
from .training.optimization import LossMeter, build_optimizer, forward_backward, optimizer_steps
from .training.phases import Phases
from .training.precision import make_accelerator
from .training.signals import Preempted, StopSignal
from .training.trainer_state import TrainerState, headline_f1

logger = get_logger("ner_accel")


def train(config: TrainConfig) -> dict:
    """Run the whole job; return the final metrics."""
    trackers = resolve_trackers(config.report_to)
    accelerator = make_accelerator(config.mixed_precision, trackers, config.run_dir / "logs", config.non_blocking)
    console = setup_logging(accelerator)
    set_seed(config.seed)
    run = set_up(config, accelerator)
    model, optimizer, scheduler, state, phase = run.model, run.optimizer, run.scheduler, run.state, run.phases
    if trackers:
        start_tracking(accelerator, config.run_dir.name, resolved_config(run), state.step)
    # A two-batch evaluation first: an evaluation bug fails at step 0, not after the first epoch.
    with phase("evaluate"):
        score(model, next(iter(run.eval_sets.values())), accelerator, run.id2label, config.decode, max_batches=2)

    losses = LossMeter(accelerator, state.unlogged_loss, state.unlogged_steps)
    progress = tqdm(
        total=run.total_steps, initial=state.step, desc="train", disable=not accelerator.is_local_main_process
    )
    with StopSignal(announce=accelerator.is_local_main_process) as stop, progress, closed_at_exit(accelerator):
        with phase("train"):
            for micro_batches in remaining_steps(run):
                losses.add(forward_backward(model, micro_batches, accelerator))
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                ends_epoch = state.advance(len(micro_batches), run.steps_per_epoch)
                progress.update(1)
                if state.step % config.logging_steps == 0 or ends_epoch:  # the only routine host syncs
                    log_training(run, losses, progress)
                if is_evaluation_step(config, state.step, ends_epoch):
                    validate(run, losses, console)
                elif config.checkpoint_steps and state.step % config.checkpoint_steps == 0:
                    save_checkpoint(run, losses)
                if stop.requested(accelerator, state.step):
                    raise Preempted(save_checkpoint(run, losses), stop.received)
                if state.out_of_patience(config.patience):
                    logger.info(f"early stop: no better F1 in {config.patience} evaluations")
                    break
        progress.close()  # the bar's last line before the final evaluation's and the summary's
        final = finish(run, losses, console)
        if stop.received:  # a signal during the final evaluation or save, which completed first
            raise Preempted(config.run_dir / MODEL_DIR, stop.received, finished=True)
    return final


# ---------------------------------------------------------------------------------------------------------------
# Set-up: data, model, optimizer and schedule, one prepare, then the saved state when resuming


@dataclass
class Run:
    """The objects one training job works with, made once by `set_up`."""

    config: TrainConfig
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    corpus: Corpus
    model: object  # the token classifier as prepared (DDP- or FSDP-wrapped when distributed)
    optimizer: object  # accelerate's AcceleratedOptimizer around torch's AdamW
    scheduler: object  # accelerate's AcceleratedScheduler around transformers' schedule
    train_loader: object  # prepared: this process's slice of each global batch
    batches: LengthGroupedBatches  # the global batches of each epoch, from (seed, epoch)
    eval_sets: dict[str, EvaluationSet]  # validation set name -> its prepared loader and gold tags
    checkpoints: Checkpoints
    state: TrainerState
    id2label: dict[int, str]
    steps_per_epoch: int
    total_steps: int
    first_step: int  # where this process started: 0, or the step resumed from
    phases: Phases  # seconds per phase, for the summary and metrics.json
    started: float = field(default_factory=time.monotonic)  # for the end-of-run summary


def set_up(config: TrainConfig, accelerator: Accelerator) -> Run:
    """Check the run directory, load data and model, build AdamW and the schedule, prepare, resume if asked."""
    phases = Phases()
    run_dir = config.run_dir
    check_output_dir(run_dir, "--output-dir/--run-name")
    lock_run_dir(run_dir, accelerator)  # one run per directory, before anything in it is read or written
    check_run_dir(run_dir, config.overwrite, resuming=config.resume is not None)
    resume_from = resolve_resume(config.resume, run_dir, accelerator) if config.resume else None
    if config.push_to_hub:  # a malformed repository id or a missing token fails now, not after training
        check_push_target(config.push_to_hub)

    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    corpus = load_corpus(config.corpus_options())
    settings = config.loop_settings(accelerator.num_processes)
    state = load_trainer_state(resume_from, corpus.labels, settings) if resume_from else None
    state = state or TrainerState(labels=corpus.labels, settings=settings)
    attention = resolve_attention(config.attention, accelerator.device.type)
    with phases("tokenize"):
        loaders = build_loaders(config, accelerator, tokenizer, corpus, pack=batch_packing(attention, config.compile))

    model = load_model(config.model, corpus.labels, config.trust_remote_code, attention=attention)
    id2label = model.config.id2label  # read before prepare wraps the model (DDP, FSDP)
    if config.freeze_word_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    else:  # only the rows the training data looks up are trained (and have AdamW moments): modeling/trained_rows.py
        trained = train_only_used_rows(model, loaders.train_token_ids)
        logger.info(f"word embeddings: {trained:,} of {model.config.vocab_size:,} rows trained (the training data's)")
    compile_layers(model, config.compile, accelerator.device.type)  # --compile: the encoder layer, in place
    optimizer = build_optimizer(model, config.learning_rate, config.weight_decay, config.layer_lr_decay)
    steps_per_epoch = math.ceil(len(loaders.train) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.num_train_epochs
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        config.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    batches = loaders.train.batch_sampler
    model, optimizer, train_loader, scheduler, *eval_loaders = accelerator.prepare(
        model, optimizer, loaders.train, scheduler, *loaders.validation.values()
    )
    # A checkpoint holds what training changes: the frozen full embedding matrix is --model's (its sha256 is kept).
    checkpoints = Checkpoints(run_dir, config.keep_checkpoints, keep_best=config.load_best, leave_out_frozen=True)
    if config.overwrite and not resume_from:  # only now, once data and model have loaded without error
        checkpoints.clear(accelerator)
    if resume_from:
        checkpoints.load(accelerator, resume_from)
        logger.info(f"resumed from {resume_from} at step {state.step} (epoch {state.epoch + 1}, "
                    f"batch {state.batches_in_epoch})")  # fmt: skip
    run = Run(
        config=config,
        accelerator=accelerator,
        tokenizer=tokenizer,
        corpus=corpus,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        batches=batches,
        eval_sets={
            name: EvaluationSet(loader, loaders.validation_gold[name])
            for name, loader in zip(loaders.validation, eval_loaders)
        },
        checkpoints=checkpoints,
        state=state,
        id2label=id2label,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        first_step=state.step,
        phases=phases,
    )
    log_banner(run)
    return run


def log_banner(run: Run) -> None:
    config, accelerator, world = run.config, run.accelerator, run.accelerator.num_processes
    logger.info(
        f"ner_accel: {config.model} | {len(run.corpus.train)} train sentences, {len(run.corpus.labels)} labels | "
        f"{world} process(es) x {config.per_device_train_batch_size} x {config.gradient_accumulation_steps} "
        f"accumulation = {config.per_device_train_batch_size * world * config.gradient_accumulation_steps} "
        f"sentences/step | {run.total_steps} steps | precision {accelerator.mixed_precision} | padding efficiency "
        f"{padding_efficiency(run.batches.lengths, list(run.batches)):.3f} | run dir {config.run_dir}"
    )


# ---------------------------------------------------------------------------------------------------------------
# What the loop calls


def remaining_steps(run: Run):
    """The micro-batches of each optimizer step from where the run stands (a resumed run skips what it has seen)."""
    for epoch in range(run.state.epoch, run.config.num_train_epochs):
        loader = run.train_loader
        if run.state.batches_in_epoch:
            loader = run.accelerator.skip_first_batches(loader, run.state.batches_in_epoch)
        run.batches.set_epoch(epoch)  # accelerate's sharding wrapper does not pass the epoch on to our sampler
        loader.set_epoch(epoch)
        yield from optimizer_steps(loader, run.config.gradient_accumulation_steps)


def is_evaluation_step(config: TrainConfig, step: int, ends_epoch: bool) -> bool:
    """Every --eval-steps optimizer steps, else at the end of each epoch."""
    return step % config.eval_steps == 0 if config.eval_steps else ends_epoch


def log_training(run: Run, losses: LossMeter, progress: tqdm) -> None:
    """Show the mean loss since the last log and the learning rate; at each logging step, also record them."""
    step, loss, rate = run.state.step, losses.mean(run.state.step), run.scheduler.get_last_lr()[0]
    progress.set_postfix(loss=f"{loss:.4f}", lr=f"{rate:.2e}")
    if step % run.config.logging_steps == 0:  # an epoch's end only refreshes the bar
        run.state.history.append({"step": step, "loss": loss, "learning_rate": rate})
        run.accelerator.log({"train/loss": loss, "train/learning_rate": rate}, step=step)
        losses.reset()


def validate(run: Run, losses: LossMeter, console: Console) -> None:
    """Score every validation set, record the result and the best F1, and checkpoint (never a diverged model)."""
    with run.phases("evaluate"):
        results = score_sets(run.model, run.eval_sets, run.accelerator, run.id2label, run.config.decode)
    run.state.record_evaluation(results)
    print_results(results, console, run.accelerator, f"step {run.state.step}")
    run.accelerator.log(evaluation_scalars(results), step=run.state.step)
    save_checkpoint(run, losses)


def save_checkpoint(run: Run, losses: LossMeter) -> Path:
    """Checkpoint the run with the loss not logged yet; a non-finite loss stops the run before it is saved."""
    run.state.unlogged_loss, run.state.unlogged_steps = losses.summed(run.state.step), losses.steps
    with run.phases("checkpoint"):
        return run.checkpoints.save(run.accelerator, run.state)


def resolved_config(run: Run) -> dict:
    """The configuration as it ran: every option, plus processes, precision and labels (train_config.json)."""
    accelerator = run.accelerator
    return {**run.config.to_dict(), "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision, "labels": run.corpus.labels}  # fmt: skip


def finish(run: Run, losses: LossMeter, console: Console) -> dict:
    """Evaluate a last step no evaluation saw, take the best weights if asked, save model, metrics and config."""
    accelerator, state, config = run.accelerator, run.state, run.config
    if state.step not in state.evaluations():  # --eval-steps did not divide the last steps
        validate(run, losses, console)
    final_step = state.step
    if config.load_best and state.best_step is not None:
        run.checkpoints.load(accelerator, run.checkpoints.path(state.best_step))
        final_step = state.best_step
    final = state.evaluations()[final_step]
    model_dir = config.run_dir / MODEL_DIR
    with run.phases("save"):
        # FSDP shards the weights: gather the full state dict (a collective, so on every process) before saving;
        # the trained embedding rows go back into the full matrix, so model/ is the plain transformers model.
        state_dict = with_full_embedding(accelerator.get_state_dict(run.model))
        if accelerator.is_main_process:
            resolved = resolved_config(run)
            write_json(config.run_dir / CONFIG_FILE, resolved)
            model = accelerator.unwrap_model(run.model)
            save_final(
                config.run_dir, model, run.tokenizer, state.history, final, state_dict, run.phases.finished(),
                card=lambda files: model_card(model_dir, resolved, final, repo_id=config.push_to_hub, files=files),
                html=render_html(training={"evaluations": state.history, "final": final}, title=config.run_dir.name),
            )  # fmt: skip
    if accelerator.is_main_process:
        batch = config.per_device_train_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
        places = {"model": model_dir, "checkpoints": run.checkpoints.root, "report": config.run_dir / RUN_REPORT}
        steps = state.step - run.first_step  # in this process: a resumed run counts from its checkpoint
        print_summary(console, time.monotonic() - run.started, steps, batch, headline_f1(final), final_step, places,
                      run.phases.seconds)  # fmt: skip
    accelerator.wait_for_everyone()
    if config.push_to_hub and accelerator.is_main_process:  # after the barrier: a failed upload holds no one up
        logger.info(f"uploaded {MODEL_DIR}/ to {push_to_hub(config.run_dir / MODEL_DIR, config.push_to_hub)}")
    return final


ABORTED = (
    "aborted; checkpoints already written are complete: resume with the same command plus --resume latest "
    "(if there is none, start again)"
)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: 0 on success, else one line on stderr and 2 (bad input), 1 (a non-finite loss or a
    failed write: the last good checkpoint stays), 128 + N (stopped by signal N, saved) or 130 (aborted)."""

    def command() -> None:
        config = parse_config(argv)
        try:
            train(config)
        except Preempted as stopped:
            raise Stopped(stopped.line(), 128 + stopped.signal_number) from None
        except FloatingPointError as error:
            raise Stopped(
                f"error: {error}; the last good checkpoint is kept (resume with --resume latest)", 1
            ) from None
        except WriteFailed as error:  # a full or failing disk: where to resume from, once there is space
            raise WriteFailed(f"{error}; {resume_hint(config.run_dir)}", error.reason) from None
        finally:
            release_run_locks()  # for callers that run several jobs in one process; an exit releases it anyway

    return run_command(command, aborted=ABORTED)


if __name__ == "__main__":
    sys.exit(main())
