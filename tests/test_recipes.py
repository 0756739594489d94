"""Training options beyond the seed recipe: layer-wise learning rates, frozen word embeddings, --recipe presets."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ner_accel.modeling.loading import load_model
from ner_accel.options import train_config as config_module
from ner_accel.options.train_config import RECIPES, parse_config
from ner_accel.training.optimization import build_optimizer, layer_depth
from tests.conftest import run_training

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_layer_depth_counts_down_from_the_head():
    assert layer_depth("classifier.weight", 2) == 0
    assert layer_depth("bert.encoder.layer.1.output.dense.weight", 2) == 1
    assert layer_depth("bert.encoder.layer.0.attention.self.query.bias", 2) == 2
    assert layer_depth("bert.embeddings.word_embeddings.weight", 2) == 3
    assert layer_depth("roberta.embeddings.LayerNorm.weight", 12) == 13


def test_layer_lr_decay_gives_each_layer_its_rate_and_keeps_decay_off_biases(tiny_model):
    model = load_model(str(tiny_model), LABELS)
    optimizer = build_optimizer(model, learning_rate=1e-3, weight_decay=0.01, layer_lr_decay=0.5)
    rate_of, decay_of = {}, {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            rate_of[id(parameter)], decay_of[id(parameter)] = group["lr"], group["weight_decay"]
    expected = {"classifier": 1e-3, "encoder.layer.1.": 5e-4, "encoder.layer.0.": 2.5e-4, "embeddings.": 1.25e-4}
    for name, parameter in model.named_parameters():
        rate = next(value for key, value in expected.items() if key in name)
        assert rate_of[id(parameter)] == pytest.approx(rate), name
        assert decay_of[id(parameter)] == (0.0 if parameter.ndim < 2 or "LayerNorm" in name else 0.01), name


def test_without_decay_the_groups_are_the_seed_recipes_two(tiny_model):
    """One rate: the two groups (decayed, not decayed) of earlier checkpoints, so they still resume."""
    model = load_model(str(tiny_model), LABELS)
    groups = build_optimizer(model, learning_rate=5e-5, weight_decay=0.01).param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(5e-5, 0.01), (5e-5, 0.0)]


def args(model, data, out, *extra):
    return ["--model", model, "--data-dir", data, "--output-dir", out, "--run-name", "run",
            "--per-device-train-batch-size", "2", "--num-train-epochs", "2", "--learning-rate", "1e-2", *extra]  # fmt: skip


def test_frozen_word_embeddings_stay_as_loaded_and_the_rest_trains(tiny_model, conll_dir, tmp_path):
    assert run_training(args(tiny_model, conll_dir, tmp_path, "--freeze-word-embeddings")) == 0
    before, after = (
        load_file(tiny_model / "model.safetensors"),
        load_file(tmp_path / "run" / "model" / "model.safetensors"),
    )
    name = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[name], after[name])
    assert not torch.equal(
        before["bert.embeddings.position_embeddings.weight"], after["bert.embeddings.position_embeddings.weight"]
    )
    assert not torch.equal(
        before["bert.encoder.layer.0.output.dense.weight"], after["bert.encoder.layer.0.output.dense.weight"]
    )
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["freeze_word_embeddings"] is True


def test_recipe_seed_sets_the_seed_notebooks_values_and_flags_still_win(tmp_path, monkeypatch):
    # As if ner_accel's own defaults had moved on: --recipe seed must still give the seed notebook's values.
    monkeypatch.setitem(config_module.RECIPES, "ner_accel", dict(learning_rate=1e-4, warmup_ratio=0.1))
    assert parse_config([]).learning_rate == 1e-4
    seed = parse_config(["--recipe", "seed"])
    assert {name: getattr(seed, name) for name in RECIPES["seed"]} == RECIPES["seed"]
    assert parse_config(["--recipe", "seed", "--learning-rate", "3e-5"]).learning_rate == 3e-5
    file = tmp_path / "run.yaml"
    file.write_text("recipe: seed\nweight_decay: 0.05\n")
    from_file = parse_config(["--config", str(file)])
    assert (from_file.recipe, from_file.learning_rate, from_file.weight_decay) == ("seed", 5e-5, 0.05)
    assert parse_config(["--config", str(file), "--recipe", "ner_accel"]).learning_rate == 1e-4


def test_recipe_small_encoder_is_the_trials_winner_and_flags_still_win():
    small = parse_config(["--recipe", "small-encoder"])
    assert (small.learning_rate, small.layer_lr_decay, small.warmup_ratio) == (2e-4, 0.9, 0.0)
    assert parse_config(["--recipe", "small-encoder", "--layer-lr-decay", "1"]).layer_lr_decay == 1.0
    assert parse_config([]).learning_rate == 5e-5  # the default recipe is untouched
