"""A training step never waits for the device: no scalar read back to the host and no op whose output shape depends
on the data, in the forward, backward, clipping and optimizer step (the packing comes from the collator, on the
host). On a GPU each of those would stall the queue the host is meant to run ahead of."""

from __future__ import annotations

import pytest
import torch
import varlen_cpu
from accelerate.state import AcceleratorState
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.auto import tqdm

from ner_accel import train
from ner_accel.modeling.unpadding import UNPADDED, VARLEN, Packer, Packing
from ner_accel.options.train_config import parse_config
from ner_accel.training.optimization import LossMeter, forward_backward
from ner_accel.training.precision import make_accelerator

# Reads of a device value on the host (Python's view: tolist, item, bool(...); aten's: _local_scalar_dense), and ops
# whose output's shape is a function of the data.
SYNCING = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "numpy", "_local_scalar_dense",
           "nonzero", "argwhere", "unique", "_unique2", "unique_consecutive", "unique_dim", "masked_select",
           "bincount", "repeat_interleave", "equal", "is_nonzero"}  # fmt: skip


class SyncCounter:
    """Counts the syncing calls made under it, by name: at the Python level (a TorchFunctionMode sees tensor methods
    such as tolist, which on a CPU never reach aten) and at aten's (a TorchDispatchMode sees what C++ code calls)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        counter = self

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                counter.note(getattr(func, "__name__", ""))
                return func(*args, **(kwargs or {}))

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.note(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.modes = (Functions(), Ops())

    def note(self, name: str) -> None:
        if name in SYNCING:
            self.seen.append(name)

    def __enter__(self) -> SyncCounter:
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


def set_up(model_dir, data_dir, tmp_path, *flags: str) -> train.Run:
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = ["--model", model_dir, "--data-dir", data_dir, "--output-dir", tmp_path, "--run-name", "r", "--overwrite",
            "--per-device-train-batch-size", "2", *flags]  # fmt: skip
    config = parse_config([str(a) for a in argv])
    return train.set_up(config, make_accelerator(config.mixed_precision, non_blocking=config.non_blocking))


def steps_under(counter: SyncCounter, run: train.Run, count: int) -> None:
    """The loop's step, as train() runs it, `count` times; the batches are drawn outside the mode (the loader's
    work on the host is not the step's)."""
    batches = iter(run.train_loader)
    for _ in range(count):
        micro_batches = [next(batches)]
        with counter:
            forward_backward(run.model, micro_batches, run.accelerator)
            run.accelerator.clip_grad_norm_(run.model.parameters(), 1.0)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("precision", ["no", "bf16"])
@pytest.mark.parametrize("flags", [(), ("--freeze-word-embeddings",), ("--gradient-accumulation-steps", "2")])
def test_training_steps_read_nothing_back(tiny_model, conll_dir, tmp_path, precision, flags):
    run = set_up(tiny_model, conll_dir, tmp_path, "--mixed-precision", precision, *flags)
    assert run.model.config._attn_implementation == UNPADDED  # the packed forward, on CPU by default
    counter = SyncCounter()
    steps_under(counter, run, 2)
    assert counter.seen == []


@pytest.mark.parametrize("token_buckets", [False, True])
def test_varlen_steps_and_token_buckets_read_nothing_back(tiny_model, conll_dir, tmp_path, monkeypatch, token_buckets):
    """The varlen kernel's path (tests/varlen_cpu.py's CPU kernel under torch's varlen_attn) and rows topped up to a
    token bucket (what --compile's collator does, here without compiling), with non-blocking copies."""
    calls = varlen_cpu.enable(monkeypatch)
    monkeypatch.setattr(train, "batch_packing", lambda attention, compile_choice: Packer(token_buckets=token_buckets))
    run = set_up(tiny_model, conll_dir, tmp_path, "--attention", VARLEN, "--non-blocking", "--mixed-precision", "no")
    assert run.accelerator.dataloader_config.non_blocking
    for name, module in run.model.named_modules():
        if name.endswith("attention.self"):
            module.dropout.p = 0.0  # varlen_attn has no dropout: with it, training attends by buckets
    before = calls["forward"]
    counter = SyncCounter()
    steps_under(counter, run, 2)
    assert counter.seen == []
    assert calls["forward"] - before == 2 * run.model.config.num_hidden_layers


def test_a_logging_step_reads_the_loss_once(tiny_model, conll_dir, tmp_path):
    """The step's one host read is the loss, at a logging step (log_training), and nothing else."""
    run = set_up(tiny_model, conll_dir, tmp_path)
    losses = LossMeter(run.accelerator)
    batch = next(iter(run.train_loader))
    counter = SyncCounter()
    with counter, tqdm(disable=True) as progress:
        losses.add(forward_backward(run.model, [batch], run.accelerator))
        run.accelerator.clip_grad_norm_(run.model.parameters(), 1.0)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        train.log_training(run, losses, progress)
    assert counter.seen == ["item", "_local_scalar_dense"]  # Tensor.item, and the aten op it runs
    assert run.state.history[-1]["step"] == run.state.step and run.state.history[-1]["loss"] > 0


def test_the_counter_sees_the_syncs_of_packing_on_the_device(tiny_model, conll_dir, tmp_path):
    """What the collator saves the forward: packing from the device's attention mask reads lengths back."""
    run = set_up(tiny_model, conll_dir, tmp_path)
    batch = next(iter(run.train_loader))
    counter = SyncCounter()
    with counter:
        lengths = batch["attention_mask"].sum(dim=1).tolist()  # what the forward did before the collator packed
        packing = Packing.of_lengths(lengths, batch["input_ids"].shape[1])
        run.model(**{**batch, "packing": packing})
    assert counter.seen == ["tolist"]
    counter = SyncCounter()
    with counter:
        torch.ones(3).nonzero()
        torch.ones(3).sum().item()
    assert counter.seen == ["nonzero", "nonzero", "item", "_local_scalar_dense"]
