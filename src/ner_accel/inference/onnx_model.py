"""An exported model (ner_accel.export) run by onnxruntime behind the torch model's interface: same inputs, `.logits`.

`Tagger` (predict) and `evaluation/scoring` (evaluate, the export's parity gate) call a model as
`model(input_ids=..., attention_mask=..., **other inputs).logits` and read `model.config`; an `OnnxTokenClassifier`
answers exactly that, so word splitting, windows, decoding, entities and scores are the torch path's own code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig
from transformers.modeling_outputs import TokenClassifierOutput

from ..errors import UsageError

ONNX_FILE = "model.onnx"  # the file name Optimum's ORTModel looks for first
INSTALL = "pip install 'ner_accel[onnx]'"
INPUT_NAMES = ("input_ids", "attention_mask")


def is_export(directory: Path) -> bool:
    """Whether a directory is an export (model.onnx beside config.json), not a torch model directory."""
    return (directory / ONNX_FILE).is_file() and (directory / "config.json").is_file()


def import_onnxruntime():
    """onnxruntime, or one line saying what to install."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"running an ONNX export needs onnxruntime; install it with {INSTALL}") from None
    return onnxruntime


def session_options(threads: int | None = None):
    """One intra-op pool of torch's thread count (OMP_NUM_THREADS or the physical cores), no inter-op pool: a
    batch is one sequential graph, and the same count keeps torch and onnxruntime comparable on a shared CPU."""
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxTokenClassifier:
    """model.onnx of an export directory in an onnxruntime session, called like a transformers token classifier."""

    device = torch.device("cpu")  # onnxruntime's CPU provider; inputs are read from wherever they are

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        onnxruntime = import_onnxruntime()
        self.directory = Path(directory)
        self.config = AutoConfig.from_pretrained(str(self.directory))
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.directory / ONNX_FILE), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own (pybind) exception types for a bad file
            raise UsageError(f"--model {directory}: cannot load {ONNX_FILE} ({str(error).splitlines()[0]})") from None
        self.input_names = [node.name for node in self.session.get_inputs()]
        if sorted(self.input_names) != sorted(INPUT_NAMES):
            raise UsageError(
                f"--model {directory}: {ONNX_FILE} takes {', '.join(self.input_names)}, not input_ids and "
                "attention_mask; export it with python -m ner_accel.export"
            )

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **ignored) -> TokenClassifierOutput:
        """Logits (batch, length, labels) of a padded batch; other inputs (packing, token_type_ids, all zero for
        these models) are not the exported graph's and are ignored, as the padded torch forward ignores packing."""
        feed = {
            "input_ids": input_ids.detach().to("cpu", torch.int64).numpy(),
            "attention_mask": attention_mask.detach().to("cpu", torch.int64).numpy(),
        }
        (logits,) = self.session.run(["logits"], feed)
        return TokenClassifierOutput(logits=torch.from_numpy(logits).to(input_ids.device))

    def eval(self) -> OnnxTokenClassifier:  # the torch model's mode switches, for the shared evaluation code
        return self

    def train(self, mode: bool = True) -> OnnxTokenClassifier:
        return self
