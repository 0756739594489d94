"""The machine a benchmark ran on, one description for every report: CPU, cores, bf16, versions, the GPU."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """/proc/cpuinfo's model name; "unknown" where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def describe() -> dict:
    """CPU model and cores, whether the CPU has native bf16 (what `--mixed-precision auto` decides by), torch's
    threads, the Python, torch and transformers versions, the load average now, and the GPU when torch sees one."""
    import torch
    import transformers

    from ner_accel.training.precision import cpu_has_native_bf16

    found = dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        native_bf16=cpu_has_native_bf16(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        load_average=os.getloadavg(),
    )
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
    return found


def one_line(machine: dict) -> str:
    """describe()'s answer as a report's sentence (without torch's threads: a report says whose it gives)."""
    gpu = f", {machine['gpu']}" if "gpu" in machine else ""
    bf16 = "native bf16" if machine["native_bf16"] else "no native bf16"
    return (
        f"{machine['cpu']}, {machine['cores']} cores ({bf16}){gpu}, torch {machine['torch']}, "
        f"transformers {machine['transformers']}"
    )
