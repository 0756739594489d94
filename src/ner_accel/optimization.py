"""One optimizer step's mechanics: AdamW groups, accumulation windows, the token-normalised backward, the loss."""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from accelerate import Accelerator

from .alignment import IGNORE


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and LayerNorm weights are not decayed."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all parameters (CPU and CUDA); 1.4x the training throughput of foreach on CPU here.
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def optimizer_steps(loader, accumulation: int):
    """The loader's micro-batches grouped into one list per optimizer step (the last may be shorter)."""
    micro_batches = []
    for batch in loader:
        micro_batches.append(batch)
        if len(micro_batches) == accumulation:
            yield micro_batches
            micro_batches = []
    if micro_batches:
        yield micro_batches


def forward_backward(model, micro_batches: list[dict], accelerator: Accelerator) -> torch.Tensor:
    """Backpropagate one optimizer step's micro-batches; return this process's share of the step's mean loss.

    The loss is summed over labelled tokens and divided by the labelled tokens of the whole effective batch
    (every micro-batch on every process), so N processes or K accumulation steps give the gradient of one big
    batch even when micro-batches hold different numbers of labelled tokens. DDP averages gradients over
    processes, hence the factor num_processes.
    """
    labelled = accelerator.reduce(sum((batch["labels"] != IGNORE).sum() for batch in micro_batches), "sum").clamp(min=1)
    step_loss = torch.zeros((), device=accelerator.device)
    for index, batch in enumerate(micro_batches):
        # Only the last micro-batch all-reduces gradients; the others accumulate locally.
        with nullcontext() if index == len(micro_batches) - 1 else accelerator.no_sync(model):
            loss = model(**batch, num_items_in_batch=labelled).loss
            accelerator.backward(loss * accelerator.num_processes)
        step_loss += loss.detach()
    return step_loss


class LossMeter:
    """Sums per-step losses on the device; reads them (one host sync) only when asked."""

    def __init__(self, device: torch.device) -> None:
        self.total, self.steps = torch.zeros((), device=device), 0

    def add(self, step_loss: torch.Tensor) -> None:
        self.total += step_loss
        self.steps += 1

    def mean(self, accelerator: Accelerator, step: int) -> float:
        """Mean per-token loss since the last reset, over all processes; a non-finite value stops the run."""
        loss = accelerator.reduce(self.total, "sum").item() / max(self.steps, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss}) in the {self.steps} optimizer steps up to step {step}"
            )
        return loss

    def reset(self) -> None:
        self.total.zero_()
        self.steps = 0
