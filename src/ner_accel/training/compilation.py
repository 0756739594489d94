"""--compile: the encoder's layer compiled once, in place, and on CUDA optionally captured as CUDA graphs.

A step at batch 24 is bound by the host (BENCHMARKS.md, "GPU"): a few milliseconds of GPU work behind tens of
milliseconds of kernel launches. Compiling the whole model took minutes (every shape of every part of it);
compiling the repeated encoder layer compiles one layer's code, which every layer then runs (its parameters are
inputs of the compiled code, not constants of it), and `nn.Module.compile` does it in place, so parameter names,
checkpoints, DDP and FSDP see the plain model. With packing the layer sees one shape per packed-row size, and
token-count buckets (unpadding.Packer, which the collator applies under --compile) bound those to a few, which is
what CUDA graphs (torch.compile's mode="reduce-overhead": one graph recorded per shape, replayed in one launch)
need. The compilation happens in the first steps of each shape: that warm-up is part of the run's time.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)
COMPILE_CHOICES = ("off", "regions", "graphs")


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's repeated layers (BERT and XLM-R bodies: `<body>.encoder.layer`)."""
    body = getattr(model, model.base_model_prefix, model)
    return body.encoder.layer


def compile_layers(model: torch.nn.Module, choice: str, device_type: str) -> int:
    """Compile each encoder layer in place for --compile `choice` ("off": nothing); returns how many.

    graphs: mode="reduce-overhead" (CUDA graphs per shape) on CUDA; elsewhere there are no graphs to capture and it
    compiles as `regions` does.
    """
    if choice == "off":
        return 0
    if choice not in COMPILE_CHOICES:
        raise ValueError(f"--compile {choice!r}: one of {', '.join(COMPILE_CHOICES)}")
    graphs = choice == "graphs" and device_type == "cuda"
    if choice == "graphs" and not graphs:
        logger.info(f"--compile graphs: CUDA graphs need CUDA; on {device_type} the layers are compiled without")
    layers = encoder_layers(model)
    for layer in layers:
        layer.compile(mode="reduce-overhead" if graphs else None)
    return len(layers)
