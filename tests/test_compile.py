"""--compile: the encoder layer compiled in place (training/compilation.py) and packed rows topped up to token
buckets train the same model as the eager loop, and the saved model is the plain one."""

from __future__ import annotations

import json
import time

import torch
from conftest import run_training
from safetensors.torch import load_file
from test_train import tiny_args

from ner_accel.modeling.heads import BertForTokenClassification
from ner_accel.training.compilation import compile_layers, encoder_layers


def test_compile_layers_compiles_each_encoder_layer_in_place(tiny_model):
    model = BertForTokenClassification.from_pretrained(tiny_model)
    names = list(model.state_dict())
    assert compile_layers(model, "off", "cpu") == 0 and encoder_layers(model)[0]._compiled_call_impl is None
    assert compile_layers(model, "graphs", "cpu") == 2  # no CUDA: compiled without graphs
    assert all(layer._compiled_call_impl is not None for layer in encoder_layers(model))
    assert list(model.state_dict()) == names  # in place: no `_orig_mod.` in any name


def test_compiled_run_trains_the_eager_model(tiny_model_no_dropout, conll_dir, tmp_path, capsys):
    """Without dropout the filler tokens change nothing: the compiled run's losses, F1 and weights are the eager
    run's, up to the compiled kernels' rounding. Prints the two runs' seconds (the difference is the compilation)."""
    torch._dynamo.reset()
    args = ["--num-train-epochs", "2", "--learning-rate", "1e-3", "--mixed-precision", "no"]
    seconds = {}
    for name, extra in [("eager", []), ("compiled", ["--compile", "regions"])]:
        started = time.perf_counter()
        assert run_training(tiny_args(tiny_model_no_dropout, conll_dir, tmp_path / name, *args, *extra)) == 0
        seconds[name] = time.perf_counter() - started
    runs = {name: json.loads((tmp_path / name / "run" / "metrics.json").read_text()) for name in seconds}
    eager, compiled = (
        [entry["loss"] for entry in runs[name]["evaluations"] if "loss" in entry] for name in ("eager", "compiled")
    )
    assert len(eager) == len(compiled) > 2
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    assert runs["compiled"]["final"]["data"]["f1"] == runs["eager"]["final"]["data"]["f1"]
    weights = {name: load_file(tmp_path / name / "run" / "model" / "model.safetensors") for name in seconds}
    assert weights["compiled"].keys() == weights["eager"].keys()
    for key, value in weights["eager"].items():
        torch.testing.assert_close(weights["compiled"][key], value, rtol=1e-3, atol=1e-5, msg=key)
    config = json.loads((tmp_path / "compiled" / "run" / "train_config.json").read_text())
    assert config["compile"] == "regions" and config["non_blocking"] is False
    with capsys.disabled():
        print(f"\n[compile] eager {seconds['eager']:.1f} s, --compile regions {seconds['compiled']:.1f} s")
