"""Choose the mixed-precision mode (what the user or accelerate config asked for, else what the device does fast)
and make the run's Accelerator at that precision (and end it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState

from ..errors import UsageError


def cpu_has_native_bf16() -> bool:
    """bf16 autocast only pays on CPUs with bf16 instructions (AVX512-BF16 or AMX); elsewhere it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(choice: str, use_cpu: bool | None = None) -> str:
    """'auto' takes `accelerate launch`'s setting if given, else bf16 where it is native, else fp32 ('no')."""
    cuda = torch.cuda.is_available() and not (
        use_cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    )
    if choice == "auto":
        choice = os.environ.get("ACCELERATE_MIXED_PRECISION") or (
            ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
            if cuda
            else ("bf16" if cpu_has_native_bf16() else "no")
        )
    if choice == "fp16" and not cuda:
        raise UsageError("--mixed-precision fp16 needs a CUDA GPU; on CPU use --mixed-precision bf16 or no")
    if choice == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError("--mixed-precision bf16: this GPU has no bf16 support; use --mixed-precision fp16 or no")
    return choice


def make_accelerator(
    choice: str, log_with: list[str] | None = None, project_dir: Path | None = None, non_blocking: bool = False
) -> Accelerator:
    """The command's Accelerator at the resolved precision, with global batches (see batching.py).

    accelerate keeps one process-wide state and refuses a second Accelerator at another precision ("restart your
    runtime"). A notebook that trains at bf16 and then evaluates at fp32 is a normal thing to do, so each command
    drops that state first, as transformers' TrainingArguments does; the process group (PartialState) stays.
    log_with: experiment trackers (tracking.py), writing under project_dir where they write files.
    non_blocking: each batch's copy to the GPU is queued, not waited for (--non-blocking). The loaders pin their
    batches on CUDA (batching.make_loader), so the copy is a DMA from page-locked memory; accelerate's prepared
    loader copies batch n, then collates batch n + 1 while the GPU works, and the pinned buffers of batch n go back
    to torch's caching host allocator, which reuses a block only once the copy that reads it has completed (an
    event recorded by the copy). Without it each batch waits for the GPU to drain (a stream synchronize). A no-op
    on CPU.
    """
    AcceleratorState._reset_state()  # private: accelerate has no public reset (TrainingArguments calls this too)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(choice),
        dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=non_blocking),
        log_with=log_with or None,
        project_dir=project_dir if log_with else None,
        # N processes launched on a machine without a GPU form one gloo job, with or without ACCELERATE_USE_CPU=1.
        cpu=launched > 1 and not torch.cuda.is_available(),
    )
    if accelerator.num_processes != launched:  # else each would train alone, into the same run directory
        raise UsageError(
            f"launched as {launched} processes (WORLD_SIZE), but they did not join one job "
            f"({accelerator.num_processes} process(es) each); on CPU set ACCELERATE_USE_CPU=1, on GPUs check the "
            "accelerate config (distributed_type, num_processes)"
        )
    return accelerator


def end_accelerator(accelerator: Accelerator) -> None:
    """Flush the trackers and leave the process group, giving gloo's worker threads a moment first.

    Under several CPU processes, a gloo worker thread frees the last collectives' tensors after they complete,
    and that takes the GIL; the process group's destructor, run when the DDP model is freed, joins those threads
    while holding the GIL. If it comes first, the process hangs at exit (pytorch/pytorch#56297). A short sleep
    releases the GIL so the workers finish first.
    """
    if accelerator.num_processes > 1:
        time.sleep(0.2)
    accelerator.end_training()
