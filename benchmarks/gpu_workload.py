"""What bench_gpu.py's configurations train on, without `datasets`: PAN-X sentences read and encoded by
ner_accel's own code, a seeded random-weight model built on the device, and the device's facts."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import NamedTuple

from benchmarks.shared_models import PANX_LABELS

REQUIRED = ["torch", "transformers", "tokenizers", "numpy", "accelerate"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def check_requirements(names: list[str] = REQUIRED, stub_missing: bool = True) -> None:
    """Exit with one line naming what is missing; give ner_accel empty datasets/seqeval modules if asked."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(
            f"{Path(sys.argv[0]).name} needs {', '.join(missing)} (pip install {' '.join(missing)}); nothing was run"
        )
    # Import transformers' Trainer first, so it records datasets as absent; then give the ner_accel modules
    # placeholders to import, and take them away again.
    import transformers.trainer  # noqa: F401

    stubs = []
    for name in ("datasets", "seqeval") if stub_missing else ():
        if importlib.util.find_spec(name) is None:
            stub = types.ModuleType(name)
            stub.Dataset, stub.concatenate_datasets, stub.config = object, None, types.SimpleNamespace()
            stub.metrics = types.ModuleType(f"{name}.metrics")
            for function in ("classification_report", "f1_score", "precision_score", "recall_score"):
                setattr(stub.metrics, function, None)
            sys.modules[name], sys.modules[f"{name}.metrics"] = stub, stub.metrics
            stubs += [name, f"{name}.metrics"]
    import ner_accel.train  # noqa: F401

    for name in stubs:
        del sys.modules[name]


def read_conll(path: Path, limit: int | None) -> list[dict]:
    """The first `limit` sentences of a CoNLL file, through ner_accel's reader."""
    from ner_accel.data.readers import read_conll as read_sentences

    return read_sentences(path)[:limit]


class Rows:
    """Column store with the slice of the datasets.Dataset API that ner_accel.data.batching.make_loader uses."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        return self.columns[key] if isinstance(key, str) else {k: v[key] for k, v in self.columns.items()}

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [{k: list(v[i]) for k, v in self.columns.items()} for i in indices]

    def select_columns(self, names: list[str]) -> Rows:
        return Rows({name: self.columns[name] for name in names})


def encode(sentences: list[dict], tokenizer) -> Rows:
    """Sub-token rows with aligned labels (ner_accel's encode_batch, PAN-X's label order), up to 512 sub-tokens."""
    from ner_accel.data.encoding import encode_batch

    batch = {"tokens": [s["tokens"] for s in sentences], "tags": [s["tags"] for s in sentences]}
    encoded = encode_batch(batch, tokenizer, {label: i for i, label in enumerate(PANX_LABELS)}, 512, False)
    return Rows({k: encoded[k] for k in ("input_ids", "attention_mask", "labels", "length")})


def model_flops_per_token(config, mean_length: float) -> float:
    """Training FLOPs per token: 6 x non-embedding weights, plus attention scores and values (12 x L x d x S)."""
    d, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights = layers * (4 * d * d + 2 * d * inner) + d * config.num_labels
    return 6 * weights + 12 * layers * d * mean_length


class Workload(NamedTuple):
    """What every configuration trains on: the model directory, the encoded sentences, the device and precision."""

    model: str
    rows: Rows
    tokenizer: object
    device: str
    bf16: bool
    peak_tflops: float | None


def build_model(workload: Workload, attention: str, **overrides):
    """The seed's head with random weights, the same for every configuration (seeded), built on the device;
    overrides: model config values (e.g. attention_probs_dropout_prob)."""
    import torch

    from ner_accel.modeling.loading import load_model

    torch.manual_seed(0)
    with torch.device(workload.device):  # random init on the GPU takes milliseconds, on the host seconds
        model = load_model(workload.model, PANX_LABELS, from_config=True, attention=attention, **overrides)
    return model.to(workload.device)


def runs_packed(model) -> bool:
    """Whether the model has ner_accel's unpadded attention, with either kernel (its batches carry their packing)."""
    from ner_accel.modeling.unpadding import UNPADDED

    return model.config._attn_implementation == UNPADDED


def device_facts(device: str) -> tuple[str, bool, float | None]:
    """The device's name, whether the runs train at bf16 (on a CUDA GPU that has it), its dense bf16 peak TFLOPS."""
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return name, bf16, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
