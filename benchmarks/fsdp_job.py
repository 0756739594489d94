"""The GPU check's FSDP job: launch/fsdp.yaml on one process, stopped by SIGTERM after its first checkpoint, resumed
with --resume latest, saved, and the saved model loaded in plain transformers.

gpu_check.py runs it (`run_fsdp`); `accelerate launch` starts this file with `--train-worker STATE_FILE TRAIN_ARGS...`
in each process: ner_accel.train.main, then what accelerate ran it as, written to STATE_FILE. Run as a file it puts
the checkout's root and src/ first on the path, so the launched processes need no pip install.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks.gpu_memory import free_memory
from benchmarks.gpu_workload import read_conll
from benchmarks.shared_models import random_weights
from ner_accel.rundir.files import write_json

ROOT = Path(__file__).resolve().parents[1]
WRAP_CLASS = {"xlm-roberta": "XLMRobertaLayer", "bert": "BertLayer"}  # FSDP's shard unit per model type
LOGITS_TOLERANCE = 1e-3  # fp32 logits, padded sdpa vs unpadded attention: ~1e-6 on CPU, kernels differ on CUDA
CHILDREN: set = set()  # launched processes, killed with their workers if the check runs out of time


# ---------------------------------------------------------------------------------------------------------------
# In each launched process


def train_worker(state_file: str, train_argv: list[str]) -> int:
    """ner_accel.train.main under `accelerate launch`, then what accelerate ran it as, to `state_file`."""
    from ner_accel.train import main as train_main

    try:
        return train_main(train_argv)
    finally:
        if os.environ.get("RANK", "0") == "0":
            try:
                state = accelerate_state()
            except Exception as error:  # a renamed attribute must not hide how the training ended
                state = {"error": repr(error)}
            write_json(Path(state_file), state)


def accelerate_state() -> dict:
    """The distributed type, processes, device and FSDP settings that this process's Accelerator ran with."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state  # read, not constructed: constructing would initialise a new state
    if "distributed_type" not in shared:
        return {"initialised": False}
    plugin = shared.get("fsdp_plugin")
    state = dict(
        distributed_type=str(getattr(shared["distributed_type"], "value", shared["distributed_type"])),
        num_processes=shared.get("num_processes"),
        device=str(shared.get("device")),
        backend=shared.get("backend"),
        mixed_precision=shared.get("_mixed_precision"),
    )
    if plugin is not None:
        names = ["fsdp_version", "state_dict_type", "reshard_after_forward", "transformer_cls_names_to_wrap"]
        state["fsdp"] = {name: str(getattr(plugin, name, None)) for name in [*names, "mixed_precision_policy"]}
    return state


# ---------------------------------------------------------------------------------------------------------------
# Launching and stopping the processes


def free_port() -> int:
    """A port nobody listens on, so concurrent launches (other test runs) do not share a rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Process ids below `pid` (torchrun starts its workers in their own session: a process group misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a launch and every process below it, and reap it."""
    for pid in [*descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def wait_for(process: subprocess.Popen, deadline: float) -> bool:
    """Wait until the process exits (True) or the deadline passes (False: it is killed, workers included)."""
    try:
        process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        return True
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return False
    finally:
        CHILDREN.discard(process)


def launch(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start a command in the checkout's root with its output in `log`, known to the watchdog (CHILDREN)."""
    with log.open("w") as handle:  # the child holds its own copy of the descriptor
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    CHILDREN.add(process)
    return process


# ---------------------------------------------------------------------------------------------------------------
# The job: run 1 stopped by SIGTERM, run 2 resumed to the end, model/ compared with the last checkpoint


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the checkpoint that `latest` names, None before the first."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    state = run_dir / "checkpoints" / pointer.read_text().strip() / "trainer_state.json"
    return json.loads(state.read_text())["step"] if state.is_file() else None


def load_weights(directory: Path) -> dict:
    """Every tensor of a model or checkpoint directory: safetensors files, or accelerate's FSDP full state dict."""
    import torch
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    for file in sorted(directory.glob("pytorch_model_fsdp*.bin")):
        tensors.update(torch.load(file, map_location="cpu", weights_only=True))
    return tensors


def compare_saved_model(model_dir: Path, checkpoint_dir: Path, start_dir: Path, validation: Path, device: str) -> dict:
    """model/ in plain transformers vs ner_accel's load_trained, and its weights vs the final checkpoint's."""
    # Same logits on real tokens: it loads without ner_accel. Same weights: it is the trained state (the checkpoint
    # keeps the trained embedding rows, merged as the final save merges them into the full matrix; a checkpoint
    # that left the frozen matrix out, as one process does, names it in trainer_state.json: --model's, `start_dir`).
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from ner_accel.modeling.loading import load_trained
    from ner_accel.modeling.trained_rows import with_full_embedding

    plain, info = AutoModelForTokenClassification.from_pretrained(model_dir, output_loading_info=True)
    ours = load_trained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = [s["tokens"] for s in read_conll(validation, 16)]
    batch = tokenizer(words, is_split_into_words=True, truncation=True, padding=True, return_tensors="pt").to(device)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = plain.to(device).eval()(**batch).logits[real].float()
        logits = ours.to(device).eval()(**batch).logits[real].float()
    checkpoint = load_weights(checkpoint_dir)
    left_out = json.loads((checkpoint_dir / "trainer_state.json").read_text()).get("frozen") or {}
    if left_out:
        start = AutoModelForTokenClassification.from_pretrained(start_dir, num_labels=plain.config.num_labels)
        checkpoint.update({name: tensor for name, tensor in start.state_dict().items() if name in left_out})
    saved, checkpoint = load_weights(model_dir), with_full_embedding(checkpoint)
    common = sorted(set(saved) & set(checkpoint))
    weight_diff = max((saved[k].float() - checkpoint[k].float()).abs().max().item() for k in common) if common else None
    config = json.loads((model_dir / "config.json").read_text())
    return dict(
        plain_class=f"{type(plain).__module__}.{type(plain).__name__}",
        architectures=config.get("architectures"),
        loading_info={k: [str(x) for x in v] for k, v in info.items()},
        logits_max_abs_diff=(logits - expected).abs().max().item(),
        predictions_agree=(logits.argmax(-1) == expected.argmax(-1)).float().mean().item(),
        compared_tokens=int(real.sum()),
        checkpoint_files=sorted(p.name for p in checkpoint_dir.iterdir()),
        weights_compared=len(common),
        weights_only_in_model=sorted(set(saved) - set(checkpoint))[:10],
        weights_only_in_checkpoint=sorted(set(checkpoint) - set(saved))[:10],
        weights_max_abs_diff=weight_diff,
    )


def run_fsdp(args, work: Path, output: Path, deadline: float, device: str) -> dict:
    """launch/fsdp.yaml on one process: stopped after the first checkpoint, resumed, saved, loaded without ner_accel."""
    # SIGTERM makes ner_accel finish the step, checkpoint and exit 143; `--resume latest` then runs to the end.
    began = time.perf_counter()
    data_dir, work = Path(args.data_dir).resolve(), work.resolve()  # the launches run in the repository root
    # from_config (the shape directory in ../shared holds no weights); freed here: the launches need the memory.
    model_dir = random_weights(args.model, work / "random-model", seed=42, device=device)
    free_memory(device)
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    batch = args.fsdp_batch_size
    train_sentences = min(args.fsdp_steps * batch, len(read_conll(data_dir / "train.conll", None)))
    steps_per_epoch = math.ceil(train_sentences / batch)
    epochs = math.ceil(args.fsdp_steps / steps_per_epoch)
    total_steps = steps_per_epoch * epochs
    # Past half-way, so the resumed run reaches the end without another --checkpoint-steps save (each one writes
    # the model and AdamW's state: 3.3 GB for xlm-roberta-base).
    checkpoint_steps = total_steps // 2 + 1
    run_dir = work / "fsdp-run"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch" / "fsdp.yaml")]
    launcher += ["--num_processes", "1", "--main_process_port", str(free_port())]
    launcher += ["--fsdp_transformer_layer_cls_to_wrap", WRAP_CLASS[model_type]]  # the yaml names XLM-R's
    train_args = ["--model", str(model_dir), "--data-dir", str(data_dir), "--output-dir", str(work)]
    train_args += ["--run-name", run_dir.name, "--max-train-samples", str(train_sentences)]
    train_args += ["--max-eval-samples", str(args.fsdp_eval_samples), "--per-device-train-batch-size", str(batch)]
    train_args += ["--num-train-epochs", str(epochs), "--checkpoint-steps", str(checkpoint_steps)]
    # Evaluation only at the end (and the sanity batches at step 0), one checkpoint kept: the job tests mechanics.
    train_args += ["--eval-steps", "1000000000", "--keep-checkpoints", "1", "--logging-steps", "10"]
    paths = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]  # ner_accel without pip install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="1000", TOKENIZERS_PARALLELISM="false")  # COLUMNS: rich does not wrap
    env.setdefault("HF_DATASETS_CACHE", str(work / "datasets-cache"))

    def worker(name: str) -> list[str]:
        """ner_accel.train.main through this file, which also records what accelerate ran it as."""
        return [str(Path(__file__).resolve()), "--train-worker", str(work / f"{name}-state.json")]

    result = dict(
        command=" ".join(launcher + worker("run1") + train_args),
        model_type=model_type,
        train_sentences=train_sentences,
        batch_size=batch,
        epochs=epochs,
        total_steps=total_steps,
        checkpoint_steps=checkpoint_steps,
        prepare_s=time.perf_counter() - began,
    )
    halfway = time.perf_counter() + (deadline - time.perf_counter()) * 0.5

    # Run 1: stopped by SIGTERM as soon as the first checkpoint exists, as a preemption or Slurm --signal would.
    started = time.perf_counter()
    first = launch(launcher + worker("run1") + train_args, output / "fsdp-run1.log", env)
    signalled_at = None
    while first.poll() is None and time.perf_counter() < halfway:
        signalled_at = checkpoint_step(run_dir)
        if signalled_at is not None:
            first.send_signal(signal.SIGTERM)  # torchrun forwards it to the worker and waits up to 30 s
            break
        time.sleep(0.05)
    if signalled_at is None and first.poll() is None:
        kill_tree(first)  # no checkpoint in half the stage's time: nothing to stop and resume
    finished = wait_for(first, halfway + 35)
    log1 = (output / "fsdp-run1.log").read_text(errors="replace")
    stopped = re.search(r"stopped by signal (\d+); checkpoint saved to (\S+)\.", log1)
    result["run1"] = dict(
        seconds=time.perf_counter() - started,
        launcher_exit_code=first.returncode if finished else "killed: out of time",
        signalled_after_checkpoint_step=signalled_at,
        stopped_by_signal=int(stopped.group(1)) if stopped else None,
        stopped_at_step=checkpoint_step(run_dir),
        accelerate=read_json(work / "run1-state.json"),
    )
    print(f"[gpu_check] FSDP run 1: {json.dumps(result['run1'])}", flush=True)
    if not stopped:
        result["run1"]["log_tail"] = log1[-3000:]
    if (run_dir / "model").is_dir():
        result.update(status="fail", error="run 1 finished before SIGTERM reached it; raise --fsdp-steps")
        return result
    if checkpoint_step(run_dir) is None:  # killed mid-save (torchrun's 30 s grace) still leaves the one before
        result.update(status="fail", error="run 1 left no checkpoint to resume; see fsdp-run1.log")
        return result

    # Run 2: the same command plus --resume latest, to the end; it saves model/ with the gathered state dict.
    started = time.perf_counter()
    second = launch(launcher + worker("run2") + train_args + ["--resume", "latest"], output / "fsdp-run2.log", env)
    finished = wait_for(second, deadline - args.fsdp_verify_s)
    log2 = (output / "fsdp-run2.log").read_text(errors="replace")
    resumed = re.search(r"resumed from \S+ at step (\d+)", log2)
    result["run2"] = dict(
        seconds=time.perf_counter() - started,
        exit_code=second.returncode if finished else "killed: out of time",
        resumed_at_step=int(resumed.group(1)) if resumed else None,
        final_step=checkpoint_step(run_dir),
        accelerate=read_json(work / "run2-state.json"),
    )
    print(f"[gpu_check] FSDP run 2: {json.dumps(result['run2'])}", flush=True)
    if second.returncode != 0 or not (run_dir / "model" / "config.json").is_file():
        result.update(status="fail", error="the resumed run did not finish and save model/; see fsdp-run2.log")
        result["run2"]["log_tail"] = log2[-3000:]
        return result

    checkpoint = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    started = time.perf_counter()
    result["saved_model"] = compare_saved_model(
        run_dir / "model", checkpoint, model_dir, data_dir / "validation.conll", device
    )
    result["saved_model"]["seconds"] = time.perf_counter() - started
    metrics = read_json(run_dir / "metrics.json") or {}
    result["final_f1"] = {k: v.get("f1") for k, v in metrics.get("final", {}).items() if isinstance(v, dict)}
    ran_as = result["run2"]["accelerate"] or {}
    saved = result["saved_model"]
    result["ran_as"] = dict(
        distributed_type=ran_as.get("distributed_type"),
        fsdp=ran_as.get("fsdp"),
        checkpoint_format="FSDP full state dict (pytorch_model_fsdp.bin)"
        if any(f.startswith("pytorch_model_fsdp") for f in saved["checkpoint_files"])
        else "plain accelerate state (model.safetensors)",
    )
    if ran_as.get("distributed_type") != "FSDP":
        result["ran_as"]["note"] = (
            f"accelerate {importlib.metadata.version('accelerate')} turns an FSDP launch config into FSDP only on "
            "GPU-like devices (AcceleratorState sets DistributedType.FSDP for MULTI_GPU, MULTI_XPU, ...); here the "
            "launch went through torchrun as one plain process: resume, SIGTERM and the save path ran, FSDP "
            "sharding, its state-dict gathering and its checkpoint format did not"
        )
    result["checks"] = checks = dict(
        stopped_by_sigterm=result["run1"]["stopped_by_signal"] == signal.SIGTERM,
        stopped_before_the_end=(result["run1"]["stopped_at_step"] or total_steps) < total_steps,
        resumed_where_it_stopped=result["run2"]["resumed_at_step"] == result["run1"]["stopped_at_step"],
        ran_to_the_end=result["run2"]["final_step"] == total_steps,
        loads_in_plain_transformers=not any(saved["loading_info"].get(k) for k in ("missing_keys", "unexpected_keys")),
        same_logits=saved["logits_max_abs_diff"] <= LOGITS_TOLERANCE,  # argmax may flip on a near tie: not checked
        model_equals_final_checkpoint=saved["weights_compared"] > 0 and saved["weights_max_abs_diff"] == 0.0,
    )
    result["status"] = "pass" if all(checks.values()) else "fail"
    return result


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None where it is missing or unreadable (a process that died before writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    if sys.argv[1:2] != ["--train-worker"]:
        sys.exit("fsdp_job.py is started by gpu_check.py's FSDP job: --train-worker STATE_FILE TRAIN_ARGS...")
    sys.exit(train_worker(sys.argv[2], sys.argv[3:]))
