"""benchmarks/attention_dropout.py: the model without attention dropout is the same model but for that one value, and
the F1 differences are paired by seed."""

from __future__ import annotations

import json

from conftest import load_benchmark
from transformers import AutoConfig

attention_dropout = load_benchmark("attention_dropout")


def test_the_variant_differs_only_in_attention_dropout(tiny_model, tmp_path):
    variant = attention_dropout.without_attention_dropout(tiny_model, tmp_path / "nodrop")
    assert AutoConfig.from_pretrained(variant).attention_probs_dropout_prob == 0.0
    original, changed = (json.loads((d / "config.json").read_text()) for d in (tiny_model, variant))
    assert {k for k in original if original[k] != changed.get(k)} == {"attention_probs_dropout_prob"}
    assert sorted(p.name for p in variant.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    assert (variant / "model.safetensors").resolve() == (tiny_model / "model.safetensors").resolve()


def test_differences_are_paired_by_seed():
    runs = {
        "with": [{"seed": 42, "f1": {"de": 0.80}}, {"seed": 43, "f1": {"de": 0.82}}, {"seed": 44, "f1": {"de": 0.9}}],
        "without": [{"seed": 43, "f1": {"de": 0.83}}, {"seed": 42, "f1": {"de": 0.78}}],  # seed 44 cut short
    }
    found = attention_dropout.paired(runs, ["de"])["de"]
    assert found["seeds"] == [42, 43] and [round(d, 4) for d in found["differences"]] == [-0.02, 0.01]
    assert round(found["mean"], 4) == -0.005
    assert "| de | mean | | | -0.0050" in attention_dropout.markdown({"paired": {"de": found}})
