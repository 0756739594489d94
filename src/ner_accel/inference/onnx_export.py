"""Writing a trained token classifier as ONNX: encoder + head through torch.onnx's exporter, INT8 through onnxruntime's
transformer optimizer and dynamic quantization; no graph edited by hand."""

from __future__ import annotations

import copy
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import UsageError
from .onnx_model import INPUT_NAMES, INSTALL

OPSET = 18  # the dynamo exporter's own default opset in torch 2.13; onnxruntime 1.17 and later run it
SINGLE_FILE_BYTES = 2 * 10**9 - 10**8  # protobuf's 2 GB limit, with room for the graph: larger weights go beside


def require_export_tools() -> None:
    """onnx, onnxscript (the exporter's) and onnxruntime importable, or one line saying what to install."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise UsageError(f"exporting to ONNX needs {module}; install it with {INSTALL}") from None


class LogitsOnly(torch.nn.Module):
    """The model's forward on (input_ids, attention_mask), returning the logits tensor alone (the graph's output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def padded_form(model: torch.nn.Module) -> torch.nn.Module:
    """A copy running transformers' padded eager attention: the graph ONNX gets (the unpadded attention's packing is
    host-side bookkeeping, which a graph with dynamic axes does not carry), in eval mode, on the CPU. Eager, not sdpa:
    the exported sdpa carries a NaN guard (IsNaN, Where) per layer that onnxruntime runs as separate kernels, and its
    head transposes are not the ones the transformer optimizer folds. Unfused, INT8 of the two graphs ran alike; the
    eager graph fused ran 1.04x to 1.09x faster (BENCHMARKS.md; the sdpa graph fused was not measured in INT8)."""
    padded = copy.deepcopy(model).to("cpu").float().eval()
    padded.set_attn_implementation("eager")
    return padded


@contextmanager
def quiet_exporter():
    """The exporter's warnings about optional packages (torchvision) and the quantizer's advice (logged on the root
    logger) kept off the console; errors still show."""
    loggers = [logging.getLogger("torch.onnx"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_fp32(model: torch.nn.Module, path: Path, opset: int = OPSET) -> None:
    """model.onnx: inputs input_ids and attention_mask (int64, batch x sequence, both axes dynamic), output logits
    (batch x sequence x labels, float32)."""
    padded = padded_form(model)
    width = 8
    input_ids, attention_mask = torch.full((2, width), 5), torch.ones(2, width, dtype=torch.int64)
    input_ids[1, width // 2 :], attention_mask[1, width // 2 :] = padded.config.pad_token_id or 0, 0  # a padded row
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    weights = sum(p.numel() * p.element_size() for p in padded.parameters())
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            LogitsOnly(padded),
            (input_ids, attention_mask),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=axes,
            verbose=False,
        )
        program.save(str(path), external_data=weights > SINGLE_FILE_BYTES)


def quantize_int8(source: Path, target: Path, config) -> None:
    """INT8 weights: first onnxruntime's transformer optimizer fuses the float graph (bias + GELU, residual + LayerNorm:
    fewer, larger kernels), then onnxruntime.quantization.quantize_dynamic puts every MatMul with a constant weight and
    the embeddings' Gather in 8 bits (the 250k-row word embedding becomes a quarter of its size), with a scale per
    output column (per_channel), activations quantized per batch at run time, so no calibration data. Every MatMul:
    keeping the feed-forward outputs fp32 (their input is GELU's output, the widest range) cost a quarter of the speed
    and gained no F1 measurable on 10,000 sentences (BENCHMARKS.md); the gate judges each model. The fused operators
    are onnxruntime's own (com.microsoft domain): the INT8 file is for onnxruntime, the fp32 export is plain ONNX."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = source.with_name(f"fused-{source.name}")  # beside the fp32 graph: the caller's scratch, removed with it
    with quiet_exporter():
        # model_type "bert": the BERT-family fusions (XLM-R, BERT, DistilBERT's layers); a pattern that does not match
        # another architecture is left as it is, and the gate judges the graph either way. opt_level 0: the fusions
        # only; the session applies onnxruntime's own graph optimizations when it loads the file.
        optimized = optimize_model(
            str(source),
            "bert",
            getattr(config, "num_attention_heads", 0),
            getattr(config, "hidden_size", 0),
            opt_level=0,
        )
        optimized.save_model_to_file(str(fused), use_external_data_format=True)  # any size: it is only read back
        del optimized  # the float weights, not held while quantize_dynamic loads its own copy
        quantize_dynamic(fused, target, weight_type=QuantType.QInt8, per_channel=True)


def onnx_opset(path: Path) -> int:
    """The default-domain opset a model file records."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
