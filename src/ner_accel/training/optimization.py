"""One optimizer step's mechanics: AdamW groups, micro-batches per step, the token-normalised backward, the loss."""

from __future__ import annotations

import math
import re
from contextlib import nullcontext

import torch
from accelerate import Accelerator

from ..data.alignment import IGNORE


def build_optimizer(
    model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_lr_decay: float = 1.0
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, weight decay on weight matrices only (not biases and LayerNorm).

    With layer_lr_decay < 1 each encoder layer learns at that factor times the rate of the layer above it: the head
    at the full rate, the top layer at lr x decay, ..., the embeddings lowest (layer-wise learning-rate decay).
    """
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            decayed = parameter.ndim >= 2 and "LayerNorm" not in name and "layer_norm" not in name
            rate = learning_rate * layer_lr_decay ** layer_depth(name, num_layers)
            groups.setdefault((rate, decayed), []).append(parameter)
    param_groups = [
        {"params": params, "lr": rate, "weight_decay": weight_decay if decayed else 0.0}
        for (rate, decayed), params in groups.items()
    ]
    # fused: one kernel over all parameters (CPU and CUDA); 1.4x the training throughput of foreach on CPU here.
    return torch.optim.AdamW(param_groups, lr=learning_rate, fused=True)


def layer_depth(name: str, num_layers: int) -> int:
    """How far below the head a parameter sits: 0 for the head, 1 for the top encoder layer, ..., then embeddings."""
    layer = re.search(r"\.layer\.(\d+)\.", name)
    if layer:
        return num_layers - int(layer.group(1))
    return num_layers + 1 if "embeddings." in name else 0


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

    def __init__(self, accelerator: Accelerator, total: float = 0.0, steps: int = 0) -> None:
        """total, steps: what a checkpoint recorded as not yet logged (summed over processes: kept on one)."""
        self.accelerator = accelerator
        self.total = torch.tensor(total if accelerator.is_main_process else 0.0, device=accelerator.device)
        self.steps = steps

    def add(self, step_loss: torch.Tensor) -> None:
        self.total += step_loss
        self.steps += 1

    def summed(self, step: int) -> float:
        """The loss since the last reset, summed over processes; a non-finite value stops the run."""
        loss = self.accelerator.reduce(self.total, "sum").item()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss}) in the {self.steps} optimizer steps up to step {step}"
            )
        return loss

    def mean(self, step: int) -> float:
        """Mean per-token loss since the last reset, over all processes."""
        return self.summed(step) / max(self.steps, 1)

    def reset(self) -> None:
        self.total.zero_()
        self.steps = 0
