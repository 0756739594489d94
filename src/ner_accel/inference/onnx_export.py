"""Writing a trained token classifier as ONNX: encoder + head through torch.onnx's exporter, INT8 through onnxruntime's
dynamic quantization; no graph edited by hand."""

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
    """A copy running transformers' padded sdpa attention: the graph ONNX gets (the unpadded attention's packing is
    host-side bookkeeping, which a graph with dynamic axes does not carry), in eval mode, on the CPU."""
    padded = copy.deepcopy(model).to("cpu").float().eval()
    padded.set_attn_implementation("sdpa")
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


def narrowing_matmuls(path: Path) -> list[str]:
    """MatMul nodes whose constant weight has more rows than columns: each layer's feed-forward output (intermediate
    width back to hidden) and the classifier."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    narrowing = []
    for node in graph.node:
        weight = shapes.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight) == 2 and weight[0] > weight[1]:
            narrowing.append(node.name)
    return narrowing


def quantize_int8(source: Path, target: Path) -> None:
    """INT8 weights (onnxruntime.quantization.quantize_dynamic): the MatMuls with a constant weight and the
    embeddings' Gather (the 250k-row word embedding becomes a quarter of its size), activations quantized per batch
    at run time, so no calibration data. Per-channel scales on the weights (a scale per output column, not one per
    matrix). The narrowing MatMuls stay fp32: the feed-forward output reads GELU's output, whose outliers one 8-bit
    scale per batch resolves worst (on e5-small fine-tuned on PAN-X.de, quantizing them too triples the F1 drop),
    and the classifier is tiny. The feed-forward outputs are a third of the encoder's weight multiplications."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_exporter():
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=narrowing_matmuls(source)
        )


def onnx_opset(path: Path) -> int:
    """The default-domain opset a model file records."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
