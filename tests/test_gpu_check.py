"""The GPU check (bench_gpu.py --check) runs every stage on CPU with a tiny model, so its one GPU run is not its
first run: versions, throughput at a fixed and the largest batch, the FSDP job stopped, resumed and saved."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ner_accel.modeling.unpadding import UNPADDED

BENCH_GPU = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
CHECK_CONFIGS = ["trainer", "trainer_grouped", "ner_accel", "ner_accel_padded"]


@pytest.fixture
def bench_gpu():
    """The script as a module; accelerate's process-wide state is reset after it, as other tests expect."""
    import importlib.util

    from accelerate.state import AcceleratorState

    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH_GPU)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    AcceleratorState._reset_state(reset_partial_state=True)


def test_check_runs_every_stage_on_cpu(tmp_path, tiny_model, conll_dir, bench_gpu, capsys):
    out = tmp_path / "out"
    argv = ["--check", "--device", "cpu", "--model", tiny_model, "--data-dir", conll_dir, "--output-dir", out]
    argv += ["--batch-sizes", "2", "max", "--max-batch", "4", "--steps", "2", "--warmup", "1"]
    argv += ["--fsdp-steps", "120", "--fsdp-batch-size", "2", "--fsdp-eval-samples", "3", "--work-dir", tmp_path]
    report = bench_gpu.main([str(a) for a in argv])

    check = json.loads((out / "check.json").read_text())
    assert check == json.loads(json.dumps(report, default=str))  # what it returns is what it wrote
    assert check["status"] == "pass" and set(check["stages"]) == {"environment", "fsdp", "throughput"}
    assert all(stage["status"] == "pass" and stage["seconds"] > 0 for stage in check["stages"].values())
    for name in ["environment", "fsdp", "throughput", "gpu"]:
        assert (out / f"{name}.json").is_file()
    assert "GPU check: pass" in capsys.readouterr().out and "FSDP job: pass" in (out / "summary.txt").read_text()

    environment = check["stages"]["environment"]
    assert environment["device"] == "cpu" and environment["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert all(environment[name] for name in ("transformers", "accelerate", "datasets", "seqeval"))

    throughput = check["stages"]["throughput"]
    for attention in ("sdpa", UNPADDED):  # the search doubled from 2 and stopped at --max-batch
        search = throughput["largest_batch"][attention]
        assert search["largest"] == 4 and [p["batch_size"] for p in search["tried"]] == [2, 4]
        assert all(p["fits"] for p in search["tried"])
    rows = {(r["config"], r["batch_size"], bool(r.get("largest"))): r for r in throughput["results"]}
    assert set(rows) == {(c, 2, False) for c in CHECK_CONFIGS} | {(c, 4, True) for c in CHECK_CONFIGS}
    assert all(r["tokens_per_s"] > 0 and 0 < r["padding_efficiency"] <= 1 and r["steps"] == 2 for r in rows.values())
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


def test_largest_batch_search_doubles_until_one_does_not_fit(bench_gpu):
    def fits_up_to(largest):
        return lambda size: {"batch_size": size, "fits": size <= largest}

    never = time.perf_counter() + 3600
    best, tried = bench_gpu.largest_fitting_batch(fits_up_to(100), 24, 4096, never)
    assert best == 96 and [p["batch_size"] for p in tried] == [24, 48, 96, 192]
    best, tried = bench_gpu.largest_fitting_batch(fits_up_to(10_000), 24, 1000, never)
    assert best == 1000 and [p["batch_size"] for p in tried] == [24, 48, 96, 192, 384, 768, 1000]
    assert bench_gpu.largest_fitting_batch(fits_up_to(10), 24, 4096, never) == (
        None,
        [{"batch_size": 24, "fits": False}],
    )
    assert bench_gpu.largest_fitting_batch(fits_up_to(100), 24, 4096, time.perf_counter() - 1) == (None, [])


def test_probe_counts_only_out_of_memory_as_not_fitting(tiny_model, conll_dir, bench_gpu):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = bench_gpu.encode(bench_gpu.read_conll(conll_dir / "train.conll", None), tokenizer)
    workload = bench_gpu.Workload(str(tiny_model), rows, tokenizer, "cpu", False, None)
    model = bench_gpu.build_model(workload, UNPADDED)
    forward = model.forward

    def small_memory(input_ids, **kwargs):  # a device that holds two sentences and no more
        if len(input_ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(input_ids, **kwargs)

    model.forward = small_memory
    assert bench_gpu.worst_batch_fits(model, workload, 2)["fits"]
    assert not bench_gpu.worst_batch_fits(model, workload, 4)["fits"]
    assert all(p.grad is None for p in model.parameters())  # nothing of the failed step is kept
    best, tried = bench_gpu.largest_fitting_batch(
        lambda size: bench_gpu.worst_batch_fits(model, workload, size), 1, len(rows), time.perf_counter() + 60
    )
    assert best == 2 and [p["fits"] for p in tried] == [True, True, False]

    def broken(input_ids, **kwargs):
        raise ValueError("a bug, not a full device")

    model.forward = broken
    with pytest.raises(ValueError, match="a bug"):
        bench_gpu.worst_batch_fits(model, workload, 2)


def test_watchdog_kills_the_launches_and_records_the_abort(tmp_path):
    script = textwrap.dedent(
        f"""
        import importlib.util, subprocess, time
        spec = importlib.util.spec_from_file_location("bench_gpu", {str(BENCH_GPU)!r})
        bench_gpu = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_gpu)
        child = subprocess.Popen(["sleep", "60"])
        bench_gpu.CHILDREN.add(child)
        print(child.pid, flush=True)
        bench_gpu.start_watchdog(0.5, bench_gpu.Path({str(tmp_path / "check.json")!r}), {{"status": "running"}})
        time.sleep(30)
        """
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=25)
    assert done.returncode == 3 and time.perf_counter() - started < 20
    assert json.loads((tmp_path / "check.json").read_text())["status"] == "aborted"
    child = int(done.stdout.split()[0])
    assert not Path(f"/proc/{child}").exists()  # killed and reaped, not left running
