"""The GPU check's stages for the training step without host stalls (issue 26): varlen attention against the padded
model, the host syncs of the steady-state step, and evaluation and predict throughput per attention.

  varlen      one batch (the longest sentences and random ones) through transformers' padded sdpa model in fp32
              (the reference), then at the run's precision through: padded sdpa, the packed row by buckets, by
              torch's varlen_attn, by varlen_attn with token buckets; the logits (real tokens), loss and gradients of
              each against the reference, and how often each ran varlen_attn. Varlen passes when it ran and is no
              further from the reference than padded sdpa is (twice its error, or 1e-5). Skipped where varlen_attn has
              no kernel for the device and precision (CPU: tests/varlen_cpu.py gives it one in tests).
  syncs       train's step (loader included: its copy to the device) for the padded, unpadded (blocking and
              --non-blocking copies) and varlen models, a few steps after a warm-up: every synchronising CUDA call
              counted (torch.cuda.set_sync_debug_mode), or on a CPU every host read of a tensor and every
              data-dependent shape of the step without its loader (whose reads are of host tensors there), by a
              dispatch mode. Passes when the --non-blocking packed steps have none.
  evaluation  collect_predictions (the forward passes of train's validation and of `evaluate`, batches of 96,
              scoring rows, word alignment; no metrics) and `predict`'s Tagger (fp32, as predict runs it, and under
              bf16 autocast on a GPU) over the validation sentences, per attention; sentences/s.
"""

from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path

from benchmarks.bench_gpu import SETTINGS, UNPADDED, VARLEN, full_batches, prepare_ner_accel, train_step
from benchmarks.gpu_memory import free_memory, sync
from benchmarks.gpu_workload import Workload, build_model, read_conll
from benchmarks.shared_models import PANX_LABELS

NO_DROPOUT = dict(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)  # the models compared must agree
HOST_READS = {"_local_scalar_dense", "nonzero", "argwhere", "masked_select", "unique", "_unique2",
              "unique_consecutive", "unique_dim", "bincount", "repeat_interleave", "equal", "is_nonzero"}  # fmt: skip
SYNC_CONFIGS = ["ner_accel_padded", "ner_accel", "ner_accel_nonblocking", "ner_accel_varlen"]


def op_counter(names: set[str] | None = None):
    """A TorchDispatchMode that counts the aten (and custom) ops run under it, by name (only `names` if given)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if names is None or name in names:
                self.counts[name] += 1
            return func(*args, **(kwargs or {}))

    return Ops()


# ---------------------------------------------------------------------------------------------------------------
# varlen: the kernels against the padded model


def compare_batch(workload: Workload, size: int):
    """A batch of the `size` // 4 longest sentences and random others, collated with token buckets; its lengths."""
    import numpy as np

    from ner_accel.data.batching import MODEL_INPUTS, Collator
    from ner_accel.modeling.unpadding import Packer

    lengths = np.asarray(workload.rows["length"])
    longest = np.argsort(-lengths, kind="stable")[: size // 4]
    others = np.random.default_rng(0).choice(np.setdiff1d(np.arange(len(lengths)), longest), size - len(longest))
    rows = workload.rows.select_columns(MODEL_INPUTS).__getitems__([*longest.tolist(), *others.tolist()])
    batch = Collator(workload.tokenizer, 8 if workload.bf16 else None, pack=Packer(token_buckets=True))(rows)
    return batch, batch["attention_mask"].sum(dim=1).tolist()


def forward_backward_of(model, batch: dict, bf16: bool, device: str):
    """Logits, loss, every parameter's gradient, and the ops counted, of one training forward and backward."""
    import torch

    counter = op_counter({"_varlen_attn", "_varlen_attn_backward"})
    model.train()
    with counter, torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        output = model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()})
        output.loss.backward()
    gradients = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return output.logits.float(), output.loss.float(), gradients, dict(counter.counts)


def errors(candidate, reference, real) -> dict:
    """Max |logits difference| on real tokens, |loss difference|, and the gradients' relative difference (global)."""
    import torch

    logits, loss, gradients, _ = candidate
    ref_logits, ref_loss, ref_gradients, _ = reference
    difference = sum(float((gradients[n] - g).pow(2).sum()) for n, g in ref_gradients.items())
    norm = sum(float(g.pow(2).sum()) for g in ref_gradients.values())
    return dict(
        logits=float((logits[real] - ref_logits[real]).abs().max().detach()),
        loss=float((loss - ref_loss).abs().detach()),
        gradients=(difference / max(norm, 1e-30)) ** 0.5,
        missing_gradients=sorted(set(ref_gradients) - set(gradients)),
        finite=bool(torch.isfinite(logits[real]).all()),
    )


def varlen_stage(workload: Workload, size: int = 24) -> dict:
    """The packed row's kernels (and token buckets) against transformers' padded model; see the module docstring."""
    import torch

    from ner_accel.modeling import unpadding

    dtype = torch.bfloat16 if workload.bf16 else torch.float32
    probe = torch.empty(1, 1, 64, device=workload.device, dtype=dtype)
    if not unpadding.varlen_runs(probe, 0.0):
        why = f"varlen_attn has no kernel for {workload.device} at {dtype} in torch {torch.__version__}"
        return dict(status="skipped", why=why)
    batch, lengths = compare_batch(workload, size)
    packed = {False: unpadding.Packer()(lengths, batch["input_ids"].shape[1]), True: batch.pop("packing")}
    real = batch["attention_mask"].bool().to(workload.device)

    def run(attention: str, packing, bf16: bool):
        model = build_model(workload, attention, **NO_DROPOUT)
        result = forward_backward_of(
            model, {**batch, **({"packing": packing} if packing else {})}, bf16, workload.device
        )
        layers = model.config.num_hidden_layers
        del model
        free_memory(workload.device)
        return result, layers

    reference, layers = run("sdpa", None, bf16=False)  # fp32, padded: what every kernel should compute
    candidates = {"sdpa": ("sdpa", None), "buckets": (UNPADDED, packed[False]), "varlen": (VARLEN, packed[False]),
                  "varlen_token_buckets": (VARLEN, packed[True])}  # fmt: skip
    found = {}
    for name, (attention, packing) in candidates.items():
        result, _ = run(attention, packing, workload.bf16)
        found[name] = dict(errors(result, reference, real), ops=result[3])
    floor = 1e-5
    checks = {}
    for name in ("varlen", "varlen_token_buckets"):
        ran = found[name]["ops"].get("_varlen_attn", 0) == layers and found[name]["ops"].get("_varlen_attn_backward")
        close = all(found[name][k] <= 2 * found["sdpa"][k] + floor for k in ("logits", "loss", "gradients"))
        checks[f"{name}_ran_varlen_attn"] = bool(ran)
        checks[f"{name}_as_close_as_sdpa"] = close and found[name]["finite"] and not found[name]["missing_gradients"]
    return dict(
        status="pass" if all(checks.values()) else "fail",
        precision="bf16" if workload.bf16 else "fp32",
        sentences=size,
        real_tokens=sum(lengths),
        token_bucket=int(packed[True].positions.shape[0]),
        errors_vs_fp32_padded=found,
        checks=checks,
    )


# ---------------------------------------------------------------------------------------------------------------
# syncs: the steady-state step


def count_syncs(device: str, step) -> tuple[int, list[str]]:
    """How many synchronising CUDA calls (on a CPU: host reads and data-dependent shapes) `step()` makes."""
    import torch

    if device != "cuda":
        counter = op_counter(HOST_READS)
        with counter:
            step()
        return sum(counter.counts.values()), sorted(counter.counts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message).lower()]
    return len(found), sorted(set(found))


def train_steps(run, batches, count: int) -> None:
    for batch in batches if isinstance(batches, list) else (next(batches) for _ in range(count)):
        train_step(run, batch)


def syncs_stage(workload: Workload, batch_size: int = 24, steps: int = 5, warmup: int = 3) -> dict:
    """Syncs per steady-state step (the loader's copy included) of each of SYNC_CONFIGS."""
    from accelerate.state import AcceleratorState

    results = {}
    for config in SYNC_CONFIGS:
        AcceleratorState._reset_state()
        setting = SETTINGS[config]
        dropout = (
            {} if setting.attention_dropout is None else {"attention_probs_dropout_prob": setting.attention_dropout}
        )
        model = build_model(workload, setting.attention, **dropout)
        run = prepare_ner_accel(model, workload, min(batch_size, len(workload.rows)), setting, warmup + steps)
        batches = full_batches(run, min(batch_size, len(workload.rows)))
        for _ in range(warmup):
            train_step(run, next(batches))
        sync(workload.device)
        if workload.device != "cuda":  # on a CPU the loader's reads are of host tensors: the step's alone count
            batches = [next(batches) for _ in range(steps)]
        count, kinds = count_syncs(workload.device, partial(train_steps, run, batches, steps))
        sync(workload.device)
        results[config] = dict(syncs_per_step=count / steps, kinds=kinds, non_blocking=setting.non_blocking)
        del model, run, batches
        free_memory(workload.device)
    sync_free = [c for c in SYNC_CONFIGS if SETTINGS[c].non_blocking and SETTINGS[c].attention != "sdpa"]
    return dict(
        status="pass" if all(results[c]["syncs_per_step"] == 0 for c in sync_free) else "fail",
        steps=steps,
        warmup=warmup,
        expected_sync_free=sync_free,
        configs=results,
    )


# ---------------------------------------------------------------------------------------------------------------
# evaluation and predict, per attention


def evaluation_stage(workload: Workload, validation: Path, sentences: int, work_dir: str | None = None) -> dict:
    """Sentences/s of collect_predictions and of predict's Tagger for the sdpa, unpadded and varlen models."""
    import tempfile

    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from ner_accel.data.batching import SCORING_INPUTS, make_loader, pad_multiple
    from ner_accel.data.corpus import to_dataset
    from ner_accel.data.encoding import encode_for_scoring
    from ner_accel.evaluation.scoring import EvaluationSet, collect_predictions
    from ner_accel.inference.tagger import Tagger
    from ner_accel.inference.windows import Windowing
    from ner_accel.modeling.loading import batch_packing, sequence_limit

    words = read_conll(validation, sentences)
    tokenizer, device = workload.tokenizer, workload.device
    windowing = Windowing.of(tokenizer, sequence_limit(tokenizer))
    texts = [" ".join(s["tokens"]) for s in words]
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu-eval-", dir=work_dir) as cache:
        rows = encode_for_scoring(to_dataset(words, "en"), tokenizer, PANX_LABELS, windowing, "validation", cache)
        for attention in ("sdpa", UNPADDED, VARLEN):
            AcceleratorState._reset_state()
            accelerator = Accelerator(mixed_precision="bf16" if workload.bf16 else "no", cpu=device == "cpu")
            model = build_model(workload, attention).eval()
            loader = make_loader(rows, tokenizer, 96, 0, train=False, columns=SCORING_INPUTS,
                                 pad_to_multiple_of=pad_multiple(accelerator.device, accelerator.mixed_precision),
                                 pack=batch_packing(attention))  # fmt: skip
            prepared, loader = accelerator.prepare(model, loader)
            evaluation = EvaluationSet(loader, [s["tags"] for s in words])
            id2label = dict(enumerate(PANX_LABELS))
            timings = {}
            for kind in ("evaluation_first", "evaluation"):  # the first pass also warms the kernels up
                started = time.perf_counter()
                collect_predictions(prepared, evaluation, accelerator, id2label)
                sync(device)
                timings[f"{kind}_sentences_per_s"] = len(words) / (time.perf_counter() - started)
            # as Tagger.load leaves it: in evaluation mode (collect_predictions puts the model back in training mode)
            tagger = Tagger(accelerator.unwrap_model(prepared).eval(), tokenizer, windowing, batch_size=32)
            variants = {"predict": False, "predict_bf16": True} if workload.bf16 else {"predict": False}
            for kind, bf16 in variants.items():
                counter = op_counter({"_varlen_attn"})
                started = time.perf_counter()
                with counter, torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    tagger.tag(texts)
                sync(device)
                timings[f"{kind}_sentences_per_s"] = len(texts) / (time.perf_counter() - started)
                timings[f"{kind}_varlen_calls"] = counter.counts.get("_varlen_attn", 0)
            results[attention] = timings
            del model, prepared, loader, tagger
            free_memory(device)
    return dict(status="pass", sentences=len(words), precision="bf16" if workload.bf16 else "fp32", **results)
