"""The export's parity gate: the exported model against its torch source on the same sentences, through the one
scoring path evaluate uses (windows, first sub-tokens, decoding): logits and entities for fp32, F1 for INT8."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.batching import SCORING_INPUTS, make_loader
from ..data.corpus import check_known_tags, to_dataset
from ..data.encoding import encode_for_scoring
from ..evaluation.metrics import entity_metrics
from ..evaluation.scoring import EvaluationSet, collect_predictions
from ..modeling.unpadding import UNPADDED
from ..training.precision import end_accelerator, make_accelerator
from .decoding import DEFAULT_DECODING
from .entities import extract_entities
from .windows import Windowing

LOGITS_TOLERANCE = 1e-3  # fp32: largest absolute logit difference allowed on any real token
F1_TOLERANCE = 0.005  # INT8: largest F1 drop allowed, overall and for each entity type


@dataclass
class Recorder:
    """A model as the scoring code calls it, keeping each batch's logits at its real tokens (flattened, in order)."""

    model: object
    logits: list[np.ndarray] = field(default_factory=list)

    @property
    def config(self):
        return self.model.config

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, **inputs):
        output = self.model(**inputs)
        real = inputs["attention_mask"].bool()
        self.logits.append(output.logits.detach().float()[real].cpu().numpy())
        return output


@dataclass
class Pass:
    """One model's pass over the check sentences: its predicted tags per sentence and its logits per batch."""

    predicted: list[list[str]]
    logits: list[np.ndarray]


def check_pass(model, rows, tokenizer, gold: list[list[str]], batch_size: int, decoding: str) -> Pass:
    """The model over the scoring rows at fp32 on this process, through evaluation/scoring.collect_predictions."""
    accelerator = make_accelerator("no")
    try:
        pack = model.config._attn_implementation == UNPADDED  # the torch model as predict runs it: packed
        loader = make_loader(rows, tokenizer, batch_size, seed=0, train=False, pack=pack, columns=SCORING_INPUTS)
        recorder = Recorder(model)
        with torch.inference_mode():
            evaluation = EvaluationSet(loader, gold)
            predictions = collect_predictions(recorder, evaluation, accelerator, model.config.id2label, decoding)
    finally:
        end_accelerator(accelerator)
    return Pass(predictions.predicted, recorder.logits)


def f1_table(metrics: dict) -> dict:
    """Overall and per-type F1 of entity_metrics' answer (the numbers the gate and the card show)."""
    return {"overall": metrics["f1"], **{kind: value["f1"] for kind, value in sorted(metrics["per_type"].items())}}


def parity_report(
    torch_model,
    exported,
    tokenizer,
    windowing: Windowing,
    sentences: list[dict],
    name: str,
    quantized: bool,
    batch_size: int = 64,
    tolerance: float = LOGITS_TOLERANCE,
    decoding: str = DEFAULT_DECODING,
) -> dict:
    """Both models on the same scoring rows (sentence order and batches identical), compared: the largest logit
    difference, the sentences whose entities differ, F1 overall and per type; `passed` by the rule for the kind."""
    labels = [torch_model.config.id2label[i] for i in range(torch_model.config.num_labels)]
    check_known_tags(sentences, labels, name, "the model's labels")
    rows = encode_for_scoring(to_dataset(sentences, name), tokenizer, labels, windowing, name)
    gold = [s["tags"] for s in sentences]
    reference = check_pass(torch_model, rows, tokenizer, gold, batch_size, decoding)
    candidate = check_pass(exported, rows, tokenizer, gold, batch_size, decoding)
    difference = np.concatenate([np.abs(a - b).ravel() for a, b in zip(reference.logits, candidate.logits)])
    differing = [
        i for i, (a, b) in enumerate(zip(reference.predicted, candidate.predicted))
        if extract_entities(a) != extract_entities(b)
    ]  # fmt: skip
    torch_f1 = f1_table(entity_metrics(gold, reference.predicted))
    onnx_f1 = f1_table(entity_metrics(gold, candidate.predicted))
    drops = {kind: torch_f1[kind] - onnx_f1.get(kind, 0.0) for kind in torch_f1}
    report = {
        "kind": "int8" if quantized else "fp32",
        "sentences": len(sentences),
        "decoding": decoding,
        "real_tokens": int(difference.size // max(len(labels), 1)),
        "max_abs_logit_difference": float(difference.max()) if difference.size else 0.0,
        "mean_abs_logit_difference": float(difference.mean()) if difference.size else 0.0,
        "sentences_with_other_entities": len(differing),
        "first_differing_sentences": differing[:10],
        "f1_torch": torch_f1,
        "f1_onnx": onnx_f1,
        "f1_drop": drops,
    }
    if quantized:
        report["rule"] = f"F1 drop at most {F1_TOLERANCE} overall and for each entity type"
        report["passed"] = all(drop <= F1_TOLERANCE for drop in drops.values())
    else:
        report["rule"] = f"logits within {tolerance:g} on every real token and the same entities on every sentence"
        report["passed"] = report["max_abs_logit_difference"] <= tolerance and not differing
    return report


def verdict(report: dict) -> str:
    """The gate's numbers in one line."""
    drop = max(report["f1_drop"], key=lambda kind: report["f1_drop"][kind])
    return (
        f"{report['kind']} export against torch on {report['sentences']} sentences: max |logit difference| "
        f"{report['max_abs_logit_difference']:.2e}, {report['sentences_with_other_entities']} sentence(s) with other "
        f"entities, F1 {report['f1_onnx']['overall']:.4f} against {report['f1_torch']['overall']:.4f} "
        f"(largest drop {report['f1_drop'][drop]:+.4f}, {drop}); rule: {report['rule']}"
    )
