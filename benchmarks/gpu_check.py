"""The GPU check: what a GPU run needs, in one call of at most 8 minutes, with JSON written as it goes.

    python benchmarks/gpu_check.py --model .benchdata/xlm-roberta-base-shape --data-dir .benchdata/panx-en \
        --output-dir $OUT
(or `python benchmarks/bench_gpu.py --check ...`, the command BENCHMARKS.md gives; run as a file it puts the
checkout's root and src/ first on the path, `python -m benchmarks.gpu_check` needs ner_accel installed or
PYTHONPATH=src). Stages, each recorded in its own JSON file and in check.json as soon as it ends:
  environment  Python, torch (CUDA, cuDNN), transformers, accelerate, datasets, seqeval, tokenizers, numpy,
               safetensors, the machine (machine.py), the GPU, its memory and driver
  varlen       gpu_step.py: varlen_attn (and token buckets) against transformers' padded model: logits, loss and
               gradients, at most twice padded sdpa's distance from the fp32 reference
  syncs        gpu_step.py: synchronising CUDA calls per steady-state training step, per attention and copy mode
  evaluation   gpu_step.py: evaluation (collect_predictions) and predict (Tagger) sentences/s per attention
  fsdp         fsdp_job.py: launch/fsdp.yaml on one process of ner_accel.train, stopped by SIGTERM after its first
               checkpoint, resumed with --resume latest to the end, model/ loaded in plain transformers and compared
               with ner_accel's load_trained (logits) and with the final checkpoint (weights)
  throughput   bench_gpu.py's configurations (trainer, ner_accel, trainer_grouped, ner_accel_padded) at batch 24
               and at the largest batch that fits, in the time left
`--skip` leaves stages out; `--configs` names the throughput configurations (bench_gpu.py lists them, the levers
of issue 26 among them). A watchdog 20 s past --budget-s marks check.json aborted, kills the launches and exits 3.
Exit code 0 when every stage passes (or is skipped, as varlen is where varlen_attn has no kernel), else 1.
tests/test_gpu_check.py runs every stage on CPU with a tiny BERT.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if not __package__:  # run as a file: `benchmarks` (the checkout's root) and this checkout's ner_accel (src/) first
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "src")]

from benchmarks import gpu_step
from benchmarks.bench_gpu import GRAPHS, markdown, run_throughput, throughput_parser, throughput_report
from benchmarks.fsdp_job import CHILDREN, kill_tree, run_fsdp
from benchmarks.gpu_memory import free_memory
from benchmarks.gpu_workload import REQUIRED, Workload, check_requirements, device_facts, encode, read_conll
from benchmarks.machine import describe
from ner_accel.rundir.files import write_json

CHECK_REQUIRED = [*REQUIRED, "datasets", "seqeval", "safetensors"]  # the FSDP job runs ner_accel.train itself
CHECK_CONFIGS = ["trainer", "ner_accel", "trainer_grouped", "ner_accel_padded"]  # the main comparison first
STAGES = {"varlen", "syncs", "evaluation", "fsdp", "throughput"}  # after environment, in this order


# ---------------------------------------------------------------------------------------------------------------
# The environment stage


def package_versions() -> dict:
    """Python and every package the check imports (None: not installed), read without importing them."""
    found = dict(python=platform.python_version())
    for name in ["torch", "transformers", "accelerate", "datasets", "seqeval", "tokenizers", "numpy", "safetensors"]:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(device: str) -> dict:
    """Device, driver and the versions of everything the check imports."""
    import torch

    found = dict(package_versions(), **describe(), platform=platform.platform())
    found.update(device=device, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        found.update(
            gpu=properties.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=properties.total_memory / 2**30,
            compute_capability=f"{properties.major}.{properties.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            found["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, timeout=15).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            found["nvidia_smi"] = repr(error)
    return found


# ---------------------------------------------------------------------------------------------------------------
# The check: environment, FSDP, throughput; JSON written after every stage, a watchdog over all of it


def check_inputs(args) -> None:
    """Fail in one line, before any work, on a model or data directory the check cannot use."""
    model, data = Path(args.model), Path(args.data_dir)
    for path, what in [
        (model / "config.json", "--model: a model config"),
        (model / "tokenizer.json", "--model: a fast tokenizer"),
        (data / "train.conll", "--data-dir: the training sentences"),
        (data / "validation.conll", "--data-dir: the validation sentences"),
    ]:
        if not path.is_file():
            sys.exit(f"gpu_check.py: {path} is missing ({what}); run the prep command in BENCHMARKS.md")


def start_watchdog(seconds: float, check_file: Path, report: dict) -> threading.Timer:
    """The hard limit: if a stage hangs (a CUDA call, a launcher), record it, kill the launches and exit."""

    def abort() -> None:
        report.update(status="aborted", error=f"over the {seconds:.0f} s hard limit; stages without results hung")
        write_json(check_file, report)
        print(f"[gpu_check] aborted after {seconds:.0f} s; partial results in {check_file.parent}", flush=True)
        for process in list(CHILDREN):
            kill_tree(process)
        os._exit(3)

    timer = threading.Timer(seconds, abort)
    timer.daemon = True
    timer.start()
    return timer


def run_check(args) -> dict:
    """Versions, the FSDP job and throughput (batch 24 and the largest that fits), within --budget-s."""
    began = time.perf_counter()
    print("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in package_versions().items()), flush=True)
    check_requirements(CHECK_REQUIRED, stub_missing=False)
    check_inputs(args)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        sys.exit(f"gpu_check.py: no CUDA device visible to torch {torch.__version__}; pass --device cpu for CPU")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(status="running", budget_s=args.budget_s, argv=sys.argv, stages={})
    watchdog = start_watchdog(args.budget_s + 20, output / "check.json", report)
    try:
        run_stages(args, report, output, device, began)
    finally:
        watchdog.cancel()  # the check returned in time (in a test, pytest lives on after it)
    summary = check_summary(report)
    (output / "summary.txt").write_text(summary)
    print(summary, flush=True)
    return report


def run_stages(args, report: dict, output: Path, device: str, began: float) -> None:
    """Each stage records its JSON file and updates check.json as soon as it ends."""
    from transformers import AutoTokenizer

    deadline = began + args.budget_s

    def finish_stage(name: str, data: dict, started: float) -> None:
        data["seconds"] = time.perf_counter() - started
        report["stages"][name] = data
        report["elapsed_s"] = time.perf_counter() - began
        write_json(output / f"{name}.json", data)
        write_json(output / "check.json", report)
        print(f"[gpu_check] {name}: {data['status']} in {data['seconds']:.0f} s", flush=True)

    started = time.perf_counter()
    env = environment(device)
    print("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    finish_stage("environment", dict(status="pass", **env), started)

    name, bf16, peak = device_facts(device)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode(read_conll(Path(args.data_dir) / "train.conll", args.sentences), tokenizer)
    workload = Workload(args.model, rows, tokenizer, device, bf16, peak)
    validation = Path(args.data_dir) / "validation.conll"
    step_stages = {  # issue 26's step: short, before the FSDP job and the throughput runs
        "varlen": lambda: gpu_step.varlen_stage(workload, args.compare_batch),
        "syncs": lambda: gpu_step.syncs_stage(workload),
        "evaluation": lambda: gpu_step.evaluation_stage(workload, validation, args.eval_sentences, args.work_dir),
    }
    for stage, run in step_stages.items():
        if stage in args.skip:
            continue
        started = time.perf_counter()
        if deadline - started < args.min_stage_s:
            finish_stage(stage, dict(status="skipped", why="out of time"), started)
            continue
        try:
            data = run()
        except Exception as error:  # recorded, and the other stages still run
            data = dict(status="fail", error=repr(error)[:1000])
        free_memory(device)
        finish_stage(stage, data, started)

    # The FSDP job's two launches are bounded by timeouts, and the throughput stage then takes whatever is left.
    if "fsdp" not in args.skip:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work_dir) as work:
            try:
                fsdp = run_fsdp(args, Path(work), output, started + args.fsdp_budget_s, device)
            except Exception as error:  # recorded, and the throughput stage still runs
                fsdp = dict(status="fail", error=repr(error)[:1000])
        free_memory(device)  # the random model and the two loaded for the logits comparison
        finish_stage("fsdp", fsdp, started)
        print(f"[gpu_check] FSDP job: {json.dumps(fsdp.get('checks', fsdp.get('error')))}", flush=True)

    if "throughput" not in args.skip:
        started = time.perf_counter()
        throughput = throughput_report(name, bf16, peak, sentences=len(rows))
        try:
            run_throughput(args, workload, throughput, output, deadline - 10)
            kinds = ("fixed", "max") if "max" in args.batch_sizes else ("fixed",)
            runnable = [c for c in args.configs if device == "cuda" or c not in GRAPHS]  # graphs need CUDA
            wanted = {(c, kind) for c in runnable for kind in kinds}
            measured = {
                (r["config"], "max" if r.get("largest") else "fixed")
                for r in throughput["results"]
                if "tokens_per_s" in r
            }
            throughput["status"] = "pass" if wanted <= measured else "fail"
        except Exception as error:
            throughput.update(status="fail", error=repr(error)[:1000])
        (output / "gpu.md").write_text(markdown(throughput))
        finish_stage("throughput", throughput, started)
    passed = all(s.get("status") in ("pass", "skipped") for s in report["stages"].values())
    report["status"] = "pass" if passed else "fail"
    write_json(output / "check.json", report)


def check_summary(report: dict) -> str:
    """A few lines a person reads first: device, the throughput table, the FSDP verdict, the time used."""
    stages = report["stages"]
    env, fsdp, throughput = stages.get("environment", {}), stages.get("fsdp", {}), stages.get("throughput", {})
    lines = [
        f"GPU check: {report['status']} in {report['elapsed_s']:.0f} s of {report['budget_s']:.0f} s",
        f"device {env.get('gpu', env.get('device'))}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"transformers {env.get('transformers')}, accelerate {env.get('accelerate')}",
        "",
        markdown(throughput) if "results" in throughput else f"throughput: {throughput.get('error', 'not run')}",
    ]
    lines += step_summary(stages)
    lines.append(f"FSDP job: {fsdp.get('status')}" + (f" ({fsdp['error']})" if "error" in fsdp else ""))
    if "checks" in fsdp:
        ran = fsdp["ran_as"]
        lines.append(
            f"  ran as {ran['distributed_type']}, checkpoints: {ran['checkpoint_format']}; stopped by signal "
            f"{fsdp['run1']['stopped_by_signal']} at step {fsdp['run1']['stopped_at_step']}, resumed at "
            f"{fsdp['run2']['resumed_at_step']}, ended at {fsdp['run2']['final_step']} of {fsdp['total_steps']}"
        )
        saved = fsdp["saved_model"]
        lines.append(
            f"  model/ in plain transformers ({saved['plain_class']}): logits max |diff| "
            f"{saved['logits_max_abs_diff']:.2e}, weights vs final checkpoint max |diff| "
            f"{saved['weights_max_abs_diff']}"
        )
        lines.append("  " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in fsdp["checks"].items()))
    return "\n".join(lines) + "\n"


def step_summary(stages: dict) -> list[str]:
    """The varlen, syncs and evaluation stages in a few lines each."""
    lines = []
    varlen, syncs, evaluation = (stages.get(name) for name in ("varlen", "syncs", "evaluation"))
    if varlen:
        lines.append(f"varlen: {varlen['status']}" + (f" ({varlen.get('why') or varlen.get('error')})"
                                                       if varlen["status"] != "pass" else ""))  # fmt: skip
        for name, found in varlen.get("errors_vs_fp32_padded", {}).items():
            lines.append(f"  {name}: logits {found['logits']:.2e}, loss {found['loss']:.2e}, gradients "
                         f"{found['gradients']:.2e} from fp32 padded; ops {found['ops']}")  # fmt: skip
    if syncs:
        lines.append(f"syncs per step: {syncs['status']}" + (f" ({syncs['error']})" if "error" in syncs else ""))
        for name, found in syncs.get("configs", {}).items():
            lines.append(f"  {name}: {found['syncs_per_step']:g} {found['kinds'][:3]}")
    if evaluation:
        lines.append(f"evaluation and predict, sentences/s: {evaluation['status']}" + (
            f" ({evaluation['error']})" if "error" in evaluation else ""))  # fmt: skip
        for name, found in evaluation.items():
            if isinstance(found, dict):
                lines.append("  " + name + ": " + ", ".join(f"{k.removesuffix('_sentences_per_s')} {v:,.0f}"
                                                            for k, v in found.items() if k.endswith("_per_s")))  # fmt: skip
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None):
    """bench_gpu.py's options and the check's own, with the check's defaults."""
    parser = throughput_parser(__doc__)
    check = parser.add_argument_group("the GPU check")
    check.add_argument("--fsdp-steps", type=int, default=48, help="optimizer steps of the FSDP job")
    check.add_argument("--fsdp-batch-size", type=int, default=24)
    check.add_argument("--fsdp-eval-samples", type=int, default=200)
    check.add_argument("--fsdp-budget-s", type=float, default=180, help="time limit of the FSDP stage")
    check.add_argument("--fsdp-verify-s", type=float, default=25, help="of it, kept for loading the saved model")
    check.add_argument("--work-dir", default=None, help="for the FSDP job's model and checkpoints (default: /tmp)")
    check.add_argument("--skip", nargs="+", default=[], choices=[*STAGES], help="stages not to run")
    check.add_argument("--compare-batch", type=int, default=24, help="sentences of the varlen stage's batch")
    check.add_argument("--eval-sentences", type=int, default=2000, help="validation sentences the evaluation times")
    args = parser.parse_args(argv)
    # The check's whole run must fit the 8 minutes it is given; --budget-s is then the hard limit of everything.
    args.budget_s = args.budget_s or 450
    args.batch_sizes = args.batch_sizes or [24, "max"]
    args.configs = args.configs or CHECK_CONFIGS
    if args.data_dir is None:
        parser.error("the GPU check needs --data-dir (train.conll and validation.conll)")
    args.data = args.data or str(Path(args.data_dir) / "train.conll")
    return args


def main(argv: list[str] | None = None) -> dict:
    return run_check(parse_args(argv))


if __name__ == "__main__":
    sys.exit(0 if main()["status"] == "pass" else 1)
