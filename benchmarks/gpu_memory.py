"""GPU memory for bench_gpu.py: synchronising, freeing and the peak of one configuration, and the largest batch that
fits, searched by doubling with a worst-case probe."""

from __future__ import annotations

import gc
import time

from benchmarks.gpu_workload import Workload, runs_packed
from benchmarks.trainer_baseline import LEARNING_RATE, WEIGHT_DECAY


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so that a clock read after it times the work."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def free_memory(device: str) -> None:
    """Give the GPU back what the last configuration held."""
    import torch

    # Trainer and Accelerator objects sit in reference cycles: only a collection frees them. On a CPU nothing is
    # measured, and a collection of this process's heap costs 0.3 s.

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reset_peak_memory(device: str) -> None:
    """Start a configuration's peak memory from what it holds now."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    """The most GPU memory allocated since the last reset (None on a CPU, where it is not measured)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error says the device ran out of memory (torch's own error, or a CUDA/cuBLAS allocation failure)."""
    import torch

    text = str(error)
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower() or "ALLOC_FAILED" in text


# ---------------------------------------------------------------------------------------------------------------
# The largest batch that fits


def worst_batch_fits(model, workload: Workload, batch_size: int) -> dict:
    """Whether two training steps on the `batch_size` longest sentences run without running out of memory."""
    # No epoch of any configuration has a batch that needs more: padded, it is b x the longest sentence; unpadded,
    # it holds the most real tokens. The second step also holds AdamW's state.
    # The probe trains every parameter, as the Trainer does: ner_accel, which trains only the embedding rows its
    # data uses, needs less, so its largest batch is a safe one.
    import numpy as np
    import torch

    from ner_accel.data.batching import MODEL_INPUTS, Collator
    from ner_accel.training.optimization import build_optimizer

    longest = np.argsort(-np.asarray(workload.rows["length"]), kind="stable")[:batch_size].tolist()
    collate = Collator(workload.tokenizer, 8 if workload.bf16 else None, pack=runs_packed(model))
    batch = collate(workload.rows.select_columns(MODEL_INPUTS).__getitems__(longest))
    batch = {k: v.to(workload.device) for k, v in batch.items()}
    reset_peak_memory(workload.device)
    started, fits, loss = time.perf_counter(), True, None
    optimizer = build_optimizer(model, LEARNING_RATE, WEIGHT_DECAY)
    try:
        for _ in range(2):
            with torch.autocast(workload.device, dtype=torch.bfloat16, enabled=workload.bf16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(workload.device)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        fits = False
    peak = peak_memory_gib(workload.device)
    del optimizer, batch, loss  # an out-of-memory backward leaves the loss holding the whole graph
    model.zero_grad(set_to_none=True)
    if not fits:  # the failed step's tensors sit in the exception's frames until a collection
        free_memory(workload.device)
    return dict(batch_size=batch_size, fits=fits, peak_memory_gib=peak, seconds=time.perf_counter() - started)


def largest_fitting_batch(fits, start: int, limit: int, deadline: float) -> tuple[int | None, list[dict]]:
    """The last batch that fit (None if `start` did not) and every probe, doubling from `start` up to `limit`."""
    # Stops at the first batch whose fits(b)["fits"] is False, or when the clock passes `deadline`.
    best, tried, size = None, [], start
    while size <= limit and time.perf_counter() < deadline:
        probe = fits(size)
        tried.append(probe)
        if not probe["fits"]:
            break
        best = size
        size = limit if size < limit < 2 * size else 2 * size  # the limit itself is the last candidate
    return best, tried
