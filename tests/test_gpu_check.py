"""The GPU check (benchmarks/gpu_check.py, also bench_gpu.py --check) runs every stage on CPU with a tiny model, so
its one GPU run is not its first run: versions, throughput at a fixed and the largest batch, the FSDP job stopped,
resumed and saved."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import varlen_cpu
from conftest import load_benchmark

from ner_accel.modeling.unpadding import UNPADDED, VARLEN

ROOT = Path(__file__).resolve().parents[1]
gpu_memory, gpu_workload = load_benchmark("gpu_memory"), load_benchmark("gpu_workload")
CHECK_CONFIGS = ["trainer", "trainer_grouped", "ner_accel", "ner_accel_padded"]
# issue 26's levers; ner_accel_varlen_graphs needs CUDA (skipped here), regions compiles on CPU too
LEVERS = ["ner_accel_nonblocking", "ner_accel_varlen", "ner_accel_varlen_regions", "ner_accel_varlen_graphs"]


@pytest.fixture
def bench_gpu():
    """benchmarks.bench_gpu; accelerate's process-wide state is reset after it, as other tests expect."""
    from accelerate.state import AcceleratorState

    yield load_benchmark("bench_gpu")
    AcceleratorState._reset_state(reset_partial_state=True)


def test_check_runs_every_stage_on_cpu(tmp_path, tiny_model, conll_dir, bench_gpu, capsys, monkeypatch):
    calls = varlen_cpu.enable(monkeypatch)  # varlen_attn on CPU: its code path, not FlashAttention's kernels
    out = tmp_path / "out"
    argv = ["--check", "--device", "cpu", "--model", tiny_model, "--data-dir", conll_dir, "--output-dir", out]
    argv += ["--batch-sizes", "2", "max", "--max-batch", "4", "--steps", "2", "--warmup", "1"]
    argv += ["--fsdp-steps", "120", "--fsdp-batch-size", "2", "--fsdp-eval-samples", "3", "--work-dir", tmp_path]
    argv += ["--configs", *CHECK_CONFIGS, *LEVERS, "--compare-batch", "4", "--eval-sentences", "3"]
    report = bench_gpu.main([str(a) for a in argv])

    check = json.loads((out / "check.json").read_text())
    assert check == json.loads(json.dumps(report, default=str))  # what it returns is what it wrote
    stages = {"environment", "varlen", "syncs", "evaluation", "fsdp", "throughput"}
    assert check["status"] == "pass" and set(check["stages"]) == stages
    assert all(stage["status"] == "pass" and stage["seconds"] > 0 for stage in check["stages"].values())
    for name in [*stages, "gpu"]:
        assert (out / f"{name}.json").is_file()
    assert "GPU check: pass" in capsys.readouterr().out and "FSDP job: pass" in (out / "summary.txt").read_text()

    varlen = check["stages"]["varlen"]
    assert all(varlen["checks"].values()) and varlen["errors_vs_fp32_padded"]["varlen"]["logits"] < 1e-4
    assert varlen["errors_vs_fp32_padded"]["buckets"]["ops"] == {} and calls["forward"] > 0
    syncs = check["stages"]["syncs"]["configs"]
    assert syncs["ner_accel_varlen"]["syncs_per_step"] == syncs["ner_accel_nonblocking"]["syncs_per_step"] == 0
    assert syncs["ner_accel_padded"]["syncs_per_step"] > 0  # transformers' sdpa mask asks whether all is real
    evaluation = check["stages"]["evaluation"]
    assert all(evaluation[a]["evaluation_sentences_per_s"] > 0 for a in ("sdpa", UNPADDED, VARLEN))
    assert evaluation[VARLEN]["predict_varlen_calls"] > 0 and evaluation[UNPADDED]["predict_varlen_calls"] == 0

    environment = check["stages"]["environment"]
    assert environment["device"] == "cpu" and environment["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert all(environment[name] for name in ("transformers", "accelerate", "datasets", "seqeval"))

    throughput = check["stages"]["throughput"]
    for attention in ("sdpa", UNPADDED, VARLEN):  # the search doubled from 2 and stopped at --max-batch
        search = throughput["largest_batch"][attention]
        assert search["largest"] == 4 and [p["batch_size"] for p in search["tried"]] == [2, 4]
        assert all(p["fits"] for p in search["tried"])
    rows = {(r["config"], r["batch_size"], bool(r.get("largest"))): r for r in throughput["results"]}
    measured = [*CHECK_CONFIGS, *LEVERS[:-1]]  # no CUDA graphs without CUDA
    assert set(rows) == {(c, 2, False) for c in measured} | {(c, 4, True) for c in measured}
    assert all(r["tokens_per_s"] > 0 and 0 < r["padding_efficiency"] <= 1 and r["steps"] == 2 for r in rows.values())
    regions = rows[("ner_accel_varlen_regions", 2, False)]
    assert 0 < regions["whole_tokens_per_s"] < regions["tokens_per_s"] and regions["warmup_s"] > 0  # compiling
    assert "| 4 (largest) | trainer_grouped |" in (out / "gpu.md").read_text()

    fsdp = check["stages"]["fsdp"]
    assert all(fsdp["checks"].values()), fsdp["checks"]
    assert fsdp["total_steps"] == 120 and fsdp["run2"]["final_step"] == 120
    assert fsdp["run1"]["stopped_by_signal"] == 15
    assert fsdp["checkpoint_steps"] <= fsdp["run1"]["stopped_at_step"] == fsdp["run2"]["resumed_at_step"] < 120
    assert fsdp["saved_model"]["plain_class"].startswith("transformers.models.bert.")  # not ner_accel's head
    assert fsdp["saved_model"]["logits_max_abs_diff"] <= 1e-4 and fsdp["saved_model"]["weights_max_abs_diff"] == 0
    assert fsdp["saved_model"]["weights_compared"] > 0 and not fsdp["saved_model"]["weights_only_in_model"]
    # accelerate 1.15 makes an FSDP config FSDP only on GPU-like devices: the JSON says what ran instead.
    ran_as = fsdp["ran_as"]
    assert ran_as["distributed_type"] in ("NO", "FSDP") and ("note" in ran_as) == (ran_as["distributed_type"] != "FSDP")
    assert fsdp["run1"]["accelerate"]["num_processes"] == 1 and fsdp["run1"]["accelerate"]["mixed_precision"] == "bf16"
    assert "launch/fsdp.yaml --num_processes 1" in fsdp["command"]
    assert "stopped by signal 15" in (out / "fsdp-run1.log").read_text()
    assert not list(tmp_path.glob("gpu-check-*"))  # the job's model and checkpoints are not left behind


def test_largest_batch_search_doubles_until_one_does_not_fit():
    def fits_up_to(largest):
        return lambda size: {"batch_size": size, "fits": size <= largest}

    never = time.perf_counter() + 3600
    best, tried = gpu_memory.largest_fitting_batch(fits_up_to(100), 24, 4096, never)
    assert best == 96 and [p["batch_size"] for p in tried] == [24, 48, 96, 192]
    best, tried = gpu_memory.largest_fitting_batch(fits_up_to(10_000), 24, 1000, never)
    assert best == 1000 and [p["batch_size"] for p in tried] == [24, 48, 96, 192, 384, 768, 1000]
    assert gpu_memory.largest_fitting_batch(fits_up_to(10), 24, 4096, never) == (
        None,
        [{"batch_size": 24, "fits": False}],
    )
    assert gpu_memory.largest_fitting_batch(fits_up_to(100), 24, 4096, time.perf_counter() - 1) == (None, [])


def test_probe_counts_only_out_of_memory_as_not_fitting(tiny_model, conll_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = gpu_workload.encode(gpu_workload.read_conll(conll_dir / "train.conll", None), tokenizer)
    workload = gpu_workload.Workload(str(tiny_model), rows, tokenizer, "cpu", False, None)
    model = gpu_workload.build_model(workload, UNPADDED)
    forward = model.forward

    def small_memory(input_ids, **kwargs):  # a device that holds two sentences and no more
        if len(input_ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(input_ids, **kwargs)

    model.forward = small_memory
    assert gpu_memory.worst_batch_fits(model, workload, 2)["fits"]
    assert not gpu_memory.worst_batch_fits(model, workload, 4)["fits"]
    assert all(p.grad is None for p in model.parameters())  # nothing of the failed step is kept
    best, tried = gpu_memory.largest_fitting_batch(
        lambda size: gpu_memory.worst_batch_fits(model, workload, size), 1, len(rows), time.perf_counter() + 60
    )
    assert best == 2 and [p["fits"] for p in tried] == [True, True, False]

    def broken(input_ids, **kwargs):
        raise ValueError("a bug, not a full device")

    model.forward = broken
    with pytest.raises(ValueError, match="a bug"):
        gpu_memory.worst_batch_fits(model, workload, 2)


def test_watchdog_kills_the_launches_and_records_the_abort(tmp_path):
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks import gpu_check
        child = subprocess.Popen(["sleep", "60"])
        gpu_check.CHILDREN.add(child)
        print(child.pid, flush=True)
        gpu_check.start_watchdog(0.5, gpu_check.Path({str(tmp_path / "check.json")!r}), {{"status": "running"}})
        time.sleep(30)
        """
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=25)
    assert done.returncode == 3 and time.perf_counter() - started < 20
    assert json.loads((tmp_path / "check.json").read_text())["status"] == "aborted"
    child = int(done.stdout.split()[0])
    assert not Path(f"/proc/{child}").exists()  # killed and reaped, not left running
