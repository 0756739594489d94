"""The word embeddings' gradient as rows (gradients.StepGradients) equals the dense backward + Accelerator clipping."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate.state import AcceleratorState

from ner_accel import train
from ner_accel.options.train_config import parse_config
from ner_accel.training.gradients import StepGradients, embedding_rows_apply
from ner_accel.training.optimization import build_optimizer, forward_backward
from ner_accel.training.precision import make_accelerator


def set_up(model_dir, data_dir, tmp_path, precision: str, *flags: str) -> train.Run:
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = ["--model", model_dir, "--data-dir", data_dir, "--output-dir", tmp_path, "--run-name", "r", "--overwrite"]
    config = parse_config([str(a) for a in argv] + ["--mixed-precision", precision, *flags])
    accelerator = make_accelerator(config.mixed_precision)
    torch.manual_seed(0)
    return train.set_up(config, accelerator)


def run_steps(run: train.Run, gradients: StepGradients, steps: list[list[dict]], max_norm: float) -> list[dict]:
    """Gradients of each optimizer step, as train's loop makes them; parameters after the last. (Read after every
    step, the state dict would write the rows path's trained rows back: its forwards must do that themselves.)"""
    seen = []
    for micro_batches in steps:
        forward_backward(run.model, micro_batches, run.accelerator)
        gradients.clip(max_norm)
        grads = {name: p.grad.clone() for name, p in run.model.named_parameters() if p.grad is not None}
        if gradients.weight is not None:  # the rows path: the matrix's gradient as the dense backward would hold it
            (name,) = [n for n, p in run.model.named_parameters() if p is gradients.weight]
            grads[name] = torch.zeros_like(gradients.weight).index_copy_(0, gradients.rows, gradients.values)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        seen.append({"grads": grads})
    weights = run.model.state_dict()  # as a save reads them: trained rows written back, owed decay paid
    seen[-1]["params"] = {name: weights[name] for name, _ in run.model.named_parameters()}
    return seen


@pytest.mark.parametrize("max_norm", [0.0, 1e-3])  # 1e-3: clipping scales every step's gradients
@pytest.mark.parametrize("accumulation", [1, 2])
def test_rows_equal_the_dense_gradient(tiny_model_no_dropout, conll_dir, tmp_path, max_norm, accumulation):
    """Three steps: the rows path's gradients and weights equal the dense path's, stale rows zeroed between steps."""
    dense = set_up(tiny_model_no_dropout, conll_dir, tmp_path / "dense", "no", "--per-device-train-batch-size", "1")
    assert embedding_rows_apply(dense.accelerator, dense.model)  # one CPU process, trained embeddings
    batches = [batch for batch in dense.train_loader]
    steps = [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)][:3]
    assert len({tuple(b["input_ids"].flatten().tolist()) for s in steps for b in s}) > 1  # different rows per step
    expected = run_steps(dense, StepGradients(dense.accelerator, dense.model, embedding_rows=False), steps, max_norm)

    rows = set_up(tiny_model_no_dropout, conll_dir, tmp_path / "rows", "no", "--per-device-train-batch-size", "1")
    got = run_steps(rows, rows.gradients, steps, max_norm)  # as set_up made them: rows, attached to the optimizer
    embedding = rows.model.get_input_embeddings()
    assert embedding.sparse and embedding.weight.grad is None and rows.gradients.values is None  # applied
    for step, (want, have) in enumerate(zip(expected, got)):
        assert want["grads"].keys() == have["grads"].keys()
        for name, grad in want["grads"].items():
            torch.testing.assert_close(have["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=f"step {step}: {name}")
        for name, param in want.get("params", {}).items():
            torch.testing.assert_close(have["params"][name], param, rtol=1e-5, atol=1e-7, msg=f"step {step}: {name}")


def test_rows_only_where_they_apply(tiny_model, conll_dir, tmp_path):
    """Frozen embeddings have no gradient; fp16's loss scaler unscales inside the Accelerator's clipping."""
    frozen = set_up(tiny_model, conll_dir, tmp_path / "f", "no", "--freeze-word-embeddings")
    assert not embedding_rows_apply(frozen.accelerator, frozen.model) and frozen.gradients.weight is None
    run = set_up(tiny_model, conll_dir, tmp_path / "b", "bf16")
    assert run.accelerator.mixed_precision == "bf16" and embedding_rows_apply(run.accelerator, run.model)
    assert run.gradients.weight is not None  # set_up chose them: train's loop uses them


def test_rows_on_the_multilingual_model(multilingual_model, tmp_path):
    """XLM-R's 250k vocabulary at bf16, one real PAN-X.de step: the same gradients and update as the dense path."""
    from conftest import PANX

    data = tmp_path / "de"
    data.mkdir()
    lines = (PANX / "de" / "train.conll").read_text(encoding="utf-8").split("\n\n")[:48]
    (data / "train.conll").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    (data / "validation.conll").write_text("\n\n".join(lines[:8]) + "\n", encoding="utf-8")
    flags = ("--per-device-train-batch-size", "24", "--max-grad-norm", "1.0")
    dense = set_up(multilingual_model, data, tmp_path / "dense", "bf16", *flags)
    dense.model.eval()  # dropout off: both paths see the same forward
    steps = [[batch] for batch in dense.train_loader][:2]
    expected = run_steps(dense, StepGradients(dense.accelerator, dense.model, embedding_rows=False), steps, 1.0)
    rows = set_up(multilingual_model, data, tmp_path / "rows", "bf16", *flags)
    rows.model.eval()
    got = run_steps(rows, rows.gradients, steps, 1.0)
    assert rows.gradients.weight is not None
    name = "bert.embeddings.word_embeddings.weight"
    # Judged at bf16 resolution: where bf16 matrix products are emulated (AVX2 CPUs) the two backward passes round
    # in a different order, so they agree to bf16's precision (2^-8 of the largest value), not bit for bit. The
    # exactness of the rows path itself is checked in fp32 above (test_rows_equal_the_dense_gradient).
    for want, have in zip(expected, got):
        scale = want["grads"][name].abs().max().item()
        torch.testing.assert_close(have["grads"][name], want["grads"][name], rtol=2**-8, atol=2**-8 * scale)
    # AdamW's first steps move a weight by about lr whatever the gradient's size, so a gradient that differs at bf16
    # resolution can move a weight by up to 2 lr a step the other way: that is the resolution of the weights here.
    update = 2 * len(steps) * dense.config.learning_rate
    torch.testing.assert_close(got[-1]["params"][name], expected[-1]["params"][name], rtol=0, atol=update)


def test_update_is_adamw_bit_for_bit(tiny_model, conll_dir, tmp_path):
    """From the same gradient, the rows update leaves every weight and moment exactly as fused AdamW over the whole
    matrix does: rows trained earlier, rows new this step (paid the decay they owe first), rows never trained
    (decay only, owed over several steps and paid when the weights are read), and after a resume."""
    run = set_up(tiny_model, conll_dir, tmp_path / "a", "no")
    weight = run.gradients.weight
    dense_model = copy.deepcopy(run.model)
    dense_weight = dense_model.get_input_embeddings().weight
    dense = build_optimizer(dense_model, run.config.learning_rate, run.config.weight_decay)
    generator = torch.Generator().manual_seed(0)

    def step_both(gradients, optimizer, rows):
        gradients.rows = rows
        gradients.values = torch.randn(len(rows), weight.shape[1], generator=generator)
        dense_weight.grad = torch.zeros_like(dense_weight).index_copy_(0, rows, gradients.values)
        optimizer.step()
        dense.step()
        dense.zero_grad(set_to_none=True)
        optimizer.state_dict()  # as a checkpoint reads them: the packed moments written back
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[gradients.weight][key], dense.state[dense_weight][key])

    def weights(model):  # as a save reads them: the state dict settles what the untrained rows owe
        return model.get_input_embeddings().state_dict()["weight"]

    vocabulary = weight.shape[0]
    step_both(run.gradients, run.optimizer, torch.tensor([1, 5, 9]))
    saved = copy.deepcopy((run.model.state_dict(), run.optimizer.state_dict(), dense.state_dict()))
    for rows in ([5, 7], [2, 8]):
        step_both(run.gradients, run.optimizer, torch.tensor(rows))
    # A load in the same process (--load-best does one) takes the loaded weights and moments, not the packed ones.
    run.model.load_state_dict(saved[0])
    run.optimizer.load_state_dict(saved[1])
    dense_model.load_state_dict(saved[0])
    dense.load_state_dict(saved[2])
    assert torch.equal(weights(run.model), dense_weight)
    step_both(run.gradients, run.optimizer, torch.tensor([5, 7]))
    run.optimizer.load_state_dict(saved[1])  # the moments alone: the weights stay those of the step just made
    dense.load_state_dict(saved[2])
    for rows in ([0, vocabulary - 1], [4]):
        step_both(run.gradients, run.optimizer, torch.tensor(rows))
    assert len(run.gradients.embedding_rows.owed) == 2 and not torch.equal(weight, dense_weight)  # not yet paid
    assert torch.equal(weights(run.model), dense_weight) and not run.gradients.embedding_rows.owed
    # A resumed process: a new model and optimizer from the saved state, new StepGradients finding rows 0,1,4,5,7,9,-1.
    resumed = set_up(tiny_model, conll_dir, tmp_path / "b", "no")
    resumed.model.load_state_dict(run.model.state_dict())
    resumed.optimizer.load_state_dict(run.optimizer.state_dict())
    for rows in ([2, 5], [3], [4, 5]):
        step_both(resumed.gradients, resumed.optimizer, torch.tensor(rows))
    trained = resumed.gradients.embedding_rows.trained
    assert trained.nonzero().squeeze(1).tolist() == [0, 1, 2, 3, 4, 5, 7, 9, vocabulary - 1]  # not 8: loaded away
    assert torch.equal(weights(resumed.model), dense_weight)


def test_lookups_and_evaluation_read_paid_rows(tiny_model, conll_dir, tmp_path):
    """A training forward pays the rows its batch looks up before reading them; an evaluation settles the matrix."""
    run = set_up(tiny_model, conll_dir, tmp_path / "a", "no", "--per-device-train-batch-size", "1")
    gradients, rows, weight = run.gradients, run.gradients.embedding_rows, run.gradients.weight
    batches = [batch for batch in run.train_loader]
    first = batches[0]["input_ids"].unique()
    forward_backward(run.model, [batches[0]], run.accelerator)
    gradients.clip(1.0)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    assert len(rows.owed) == 1
    unseen = [b for b in batches[1:] if not set(b["input_ids"].unique().tolist()) <= set(first.tolist())]
    looked_up = unseen[0]["input_ids"].unique()
    new = looked_up[~rows.trained[looked_up]]
    owed = weight.index_select(0, new) * rows.owed[0]
    forward_backward(run.model, [unseen[0]], run.accelerator)  # the hook paid the new rows before the lookup
    assert torch.equal(weight.index_select(0, new), owed) and (rows.paid[new] == 1).all()
    run.optimizer.zero_grad(set_to_none=True)
    gradients.values = None  # this gradient is not applied: the rows stay paid and untrained
    with torch.no_grad():
        run.model(**{k: v for k, v in unseen[0].items() if k != "labels"})
    assert not rows.owed and (rows.paid == 0).all()  # settled
