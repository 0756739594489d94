"""Going from 1 to N processes changes the launch line and nothing else: real 2-process gloo jobs on CPU
(`launch/cpu.yaml`) against one process, on a tiny dropout-free model and sentences of varied length.

Run as a script under `accelerate launch`, this file is also the evaluation worker of
test_evaluation_under_two_processes_equals_one_exactly.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState
from conftest import TRAIN, VALIDATION, run_training
from datasets import Dataset
from safetensors.torch import load_file

from ner_accel.data.batching import SCORING_INPUTS, make_loader
from ner_accel.data.encoding import encode_for_scoring
from ner_accel.data.readers import read_conll
from ner_accel.evaluation.scoring import EvaluationSet, collect_predictions, score
from ner_accel.inference.windows import Windowing
from ner_accel.modeling.heads import BertForTokenClassification
from ner_accel.modeling.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "launch" / "cpu.yaml"
pytestmark = pytest.mark.slow

# 60 training sentences of 1 to 14 words: with --max-length 16, length-grouped global batches of 24 hold
# different numbers of labelled tokens, and the last batch (12 sentences) is short.
TRAIN_SENTENCES, VALIDATION_SENTENCES = 60, 11
EVAL_SIZES = (8, 10, 11)  # with global eval batches of 4: a multiple of it, of the world size only, of neither


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def sentences(count: int, seed: int) -> str:
    """CoNLL text of `count` sentences, each a run of 1 to 14 consecutive words of the fixture corpus."""
    pool = [line.split("\t") for line in (TRAIN + VALIDATION).splitlines() if "\t" in line and "DOCSTART" not in line]
    rng = random.Random(seed)
    blocks = []
    for _ in range(count):
        start, size = rng.randrange(len(pool)), rng.randint(1, 14)
        words = [pool[(start + i) % len(pool)] for i in range(size)]
        words = [(w, "B-" + t[2:] if i == 0 and t.startswith("I-") else t) for i, (w, t) in enumerate(words)]
        blocks.append("\n".join(f"{w}\t{t}" for w, t in words))
    return "\n\n".join(blocks) + "\n"


def write_corpus(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.conll").write_text(sentences(TRAIN_SENTENCES, seed=0), encoding="utf-8")
    (directory / "validation.conll").write_text(sentences(VALIDATION_SENTENCES, seed=1), encoding="utf-8")
    return directory


def train_args(model: Path, data: Path, out: Path, name: str, *extra: str) -> list[str]:
    """Two epochs of 3 optimizer steps of 24 sentences, fp32, a learning rate that moves the weights visibly."""
    return [
        "--model", str(model), "--data-dir", str(data), "--output-dir", str(out), "--run-name", name,
        "--num-train-epochs", "2", "--max-length", "16", "--learning-rate", "1e-3", "--seed", "7",
        "--per-device-eval-batch-size", "2", "--logging-steps", "1", "--mixed-precision", "no",
        "--group-by-length", "true", *extra,
    ]  # fmt: skip


def launch_two(script: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file launch/cpu.yaml` (2 gloo processes, a free port) of a module or script."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), *script]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"2-process job failed:\n{done.stderr[-6000:]}"
    return done


def launch_env(cache: Path) -> dict[str, str]:
    # COLUMNS: rich wraps log lines at the terminal width; wide lines keep each message on one line.
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache),
            "COLUMNS": "250", "OMP_NUM_THREADS": "1"}  # fmt: skip


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def assert_same_weights(actual: Path, expected: Path, initial: Path) -> None:
    """Equal within float32 reduction-order noise, while training moved them far more than that."""
    actual, expected, initial = weights(actual), weights(expected), load_file(initial / "model.safetensors")
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m, name=name: f"{name}: {m}")
    moved = max((expected[name] - initial[name]).abs().max().item() for name in initial)
    assert moved > 1e-3, f"training barely moved the weights ({moved}); the comparison would prove nothing"


def final_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def losses(metrics: dict) -> list[float]:
    return [entry["loss"] for entry in metrics["evaluations"] if "loss" in entry]


# ---------------------------------------------------------------------------------------------------------------
# Runs, shared by the tests of this module


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("distributed")
    write_corpus(directory / "data")
    return directory


def in_process_run(workdir: Path, model: Path, name: str, *extra: str) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(workdir / f"cache-{name}"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        assert run_training(train_args(model, workdir / "data", workdir / "out", name, *extra)) == 0
    return workdir / "out" / name


@pytest.fixture(scope="module")
def one_process(workdir, tiny_model_no_dropout) -> Path:
    """1 process x 24 sentences a step."""
    return in_process_run(workdir, tiny_model_no_dropout, "one", "--per-device-train-batch-size", "24")


@pytest.fixture(scope="module")
def accumulated(workdir, tiny_model_no_dropout) -> Path:
    """1 process x 12 sentences x 2 accumulation steps."""
    args = ("--per-device-train-batch-size", "12", "--gradient-accumulation-steps", "2")
    return in_process_run(workdir, tiny_model_no_dropout, "accumulated", *args)


CHECKPOINTED = ("--per-device-train-batch-size", "12", "--checkpoint-steps", "2", "--keep-checkpoints", "10")


@pytest.fixture(scope="module")
def two_processes(workdir, tiny_model_no_dropout) -> tuple[Path, subprocess.CompletedProcess]:
    """2 processes x 12 sentences, a checkpoint every 2 steps and at each epoch end; (run dir, the launch)."""
    args = train_args(tiny_model_no_dropout, workdir / "data", workdir / "out", "two", *CHECKPOINTED)
    done = launch_two(["-m", "ner_accel.train", *args], launch_env(workdir / "cache-two"))
    return workdir / "out" / "two", done


# ---------------------------------------------------------------------------------------------------------------
# Training equivalence


@pytest.mark.numerics
def test_two_processes_train_to_the_weights_of_one_process(one_process, two_processes, tiny_model_no_dropout):
    two, _ = two_processes
    assert_same_weights(two, one_process, tiny_model_no_dropout)
    one_metrics, two_metrics = final_metrics(one_process), final_metrics(two)
    assert len(losses(one_metrics)) == 6  # 2 epochs x 3 steps: two full batches and the short one
    assert losses(two_metrics) == pytest.approx(losses(one_metrics), rel=1e-5)
    assert two_metrics["final"]["data"]["sentences"] == one_metrics["final"]["data"]["sentences"] == 11
    config = json.loads((two / "train_config.json").read_text())
    assert config["num_processes"] == 2 and config["group_by_length"] is True


def test_gradient_accumulation_trains_to_the_weights_of_the_large_batch(
    one_process, accumulated, tiny_model_no_dropout
):
    assert_same_weights(accumulated, one_process, tiny_model_no_dropout)
    expected, actual = losses(final_metrics(one_process)), losses(final_metrics(accumulated))
    assert actual == pytest.approx(expected, rel=1e-5)


def test_loss_is_normalised_per_labelled_token_of_the_effective_batch(tiny_model_no_dropout):
    """Micro-batches with 3 and 12 labelled tokens: the accumulated gradient is that of the 15 tokens as one
    batch, which a mean of per-micro-batch means (weighting each of the 3 tokens 4 times more) is not."""
    from ner_accel.training.optimization import forward_backward

    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(tiny_model_no_dropout)
    vocab, labels = model.config.vocab_size, model.config.num_labels

    def batch(rows: int, labelled: int) -> dict[str, torch.Tensor]:
        target = torch.full((rows, 8), -100)
        target.view(-1)[torch.randperm(rows * 8)[:labelled]] = torch.randint(labels, (labelled,))
        return {"input_ids": torch.randint(5, vocab, (rows, 8)), "attention_mask": torch.ones(rows, 8, dtype=torch.long),
                "labels": target}  # fmt: skip

    small, large = batch(1, 3), batch(3, 12)
    together = {key: torch.cat([small[key], large[key]]) for key in small}

    def gradients(backward) -> list[torch.Tensor]:
        model.zero_grad()
        backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        accelerator = Accelerator(cpu=True)
        step_loss = []
        accumulated = gradients(lambda: step_loss.append(forward_backward(model, [small, large], accelerator)))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    one_batch = gradients(lambda: model(**together).loss.backward())
    mean_of_means = gradients(lambda: ((model(**small).loss + model(**large).loss) / 2).backward())

    torch.testing.assert_close(step_loss[0], model(**together).loss.detach())
    for ours, reference in zip(accumulated, one_batch):
        torch.testing.assert_close(ours, reference)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(accumulated, mean_of_means))


# ---------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_sets(model_dir: str, data_dir: str) -> dict[str, dict]:
    """Gold and predicted tags and metrics of the first N validation sentences, N in EVAL_SIZES, with global
    batches of 2 per process (what train.py builds), under however many processes this runs."""
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True))
    tokenizer = load_tokenizer(model_dir)
    model = BertForTokenClassification.from_pretrained(model_dir)
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]  # the tiny model's 7 outputs
    id2label = dict(enumerate(labels))
    words = Dataset.from_list(read_conll(Path(data_dir) / "validation.conll"))
    with accelerator.main_process_first():
        rows = encode_for_scoring(words, tokenizer, labels, Windowing.of(tokenizer, 16), "validation")
    loaders = [
        make_loader(
            rows.filter(lambda row, size=size: row["sentence"] < size), tokenizer, 2 * accelerator.num_processes,
            seed=0, train=False, columns=SCORING_INPUTS,
        )
        for size in EVAL_SIZES
    ]  # fmt: skip
    model, *loaders = accelerator.prepare(model, *loaders)
    results = {}
    for size, loader in zip(EVAL_SIZES, loaders):
        evaluation = EvaluationSet(loader, list(words["tags"])[:size])
        found = collect_predictions(model, evaluation, accelerator, id2label)
        results[str(size)] = {
            "gold": found.gold,
            "predicted": found.predicted,
            "metrics": score(model, evaluation, accelerator, id2label),
        }
    return results


def test_evaluation_under_two_processes_equals_one_exactly(workdir, tiny_model_no_dropout, tmp_path):
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        one = json.loads(json.dumps(evaluate_sets(str(tiny_model_no_dropout), str(workdir / "data"))))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    output = tmp_path / "two.json"
    worker = [__file__, "evaluate", str(tiny_model_no_dropout), str(workdir / "data"), str(output)]
    launch_two(worker, launch_env(tmp_path / "cache"))
    two = json.loads(output.read_text())
    assert two == one
    for size in EVAL_SIZES:
        assert len(one[str(size)]["gold"]) == one[str(size)]["metrics"]["sentences"] == size
    # The model is random, so its tags vary from word to word: equal lists are a real comparison.
    assert len({tag for tags in one["11"]["predicted"] for tag in tags}) > 2


# ---------------------------------------------------------------------------------------------------------------
# Artifacts, logs, checkpoints


def test_only_the_main_process_writes_artifacts_and_logs(two_processes):
    two, done = two_processes
    written = sorted(str(p.relative_to(two)) for p in two.rglob("*") if p.is_file())
    steps = ["step-0000002", "step-0000003", "step-0000004", "step-0000006"]
    parts = ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin",
             "trainer_state.json"]  # fmt: skip
    assert written == sorted(
        ["checkpoints/latest", "metrics.json", "report.html", "report.txt", "train_config.json",
         "model/README.md", "model/config.json", "model/model.safetensors", "model/tokenizer.json",
         "model/tokenizer_config.json",
         *(f"checkpoints/{step}/{part}" for step in steps for part in parts)]
    )  # fmt: skip
    log = done.stderr
    assert log.count("done in") == 1  # the end-of-run summary
    assert log.count("2 process(es) x 12 x 1 accumulation = 24 sentences/step") == 1
    assert "[RANK 1]" not in log
    assert log.count("step 3: data") == log.count("step 6: data") == 1  # one table per evaluation


def test_checkpoint_of_two_processes_resumes_under_two_to_the_uninterrupted_result(
    workdir, two_processes, tiny_model_no_dropout
):
    two, _ = two_processes
    checkpoint = two / "checkpoints" / "step-0000002"  # mid-epoch: 2 of the first epoch's 3 batches done
    args = train_args(tiny_model_no_dropout, workdir / "data", workdir / "out", "resumed", *CHECKPOINTED,
                      "--resume", str(checkpoint))  # fmt: skip
    done = launch_two(["-m", "ner_accel.train", *args], launch_env(workdir / "cache-resumed"))
    resumed = workdir / "out" / "resumed"
    assert "resumed from" in done.stderr
    assert_same_weights(resumed, two, tiny_model_no_dropout)
    expected, actual = final_metrics(two), final_metrics(resumed)
    assert [e["step"] for e in actual["evaluations"]] == [e["step"] for e in expected["evaluations"]]
    assert losses(actual) == pytest.approx(losses(expected), rel=1e-5)
    assert actual["final"] == expected["final"]


def test_load_best_under_two_processes_equals_one(workdir, tiny_model_no_dropout):
    """Every process must know the best checkpoint: each loads it back, and none evaluates alone."""
    extra = ("--eval-steps", "4", "--load-best")  # evaluations at steps 4 and 6 (the last, not a multiple of 4)
    one = in_process_run(workdir, tiny_model_no_dropout, "best-one", "--per-device-train-batch-size", "24", *extra)
    args = train_args(tiny_model_no_dropout, workdir / "data", workdir / "out", "best-two",
                      "--per-device-train-batch-size", "12", *extra)  # fmt: skip
    launch_two(["-m", "ner_accel.train", *args], launch_env(workdir / "cache-best-two"))
    two = workdir / "out" / "best-two"
    assert_same_weights(two, one, tiny_model_no_dropout)
    expected, actual = final_metrics(one), final_metrics(two)
    assert [e["step"] for e in actual["evaluations"] if "validation" in e] == [4, 6]
    assert actual["final"] == expected["final"]


if __name__ == "__main__" and sys.argv[1] == "evaluate":
    results = evaluate_sets(sys.argv[2], sys.argv[3])
    if PartialState().is_main_process:
        Path(sys.argv[4]).write_text(json.dumps(results))


def test_two_processes_train_the_same_embedding_rows_as_one(one_process, two_processes):
    """Each process derives the trained rows from the whole training set: the same rows, the same trained values."""
    two, _ = two_processes
    embedding = "bert.embeddings.word_embeddings"
    one_ckpt = load_file(sorted((one_process / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
    two_ckpt = load_file(sorted((two / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
    assert torch.equal(one_ckpt[f"{embedding}.rows"], two_ckpt[f"{embedding}.rows"])
    torch.testing.assert_close(two_ckpt[f"{embedding}.trained_rows"], one_ckpt[f"{embedding}.trained_rows"])
    assert f"{embedding}.trained_rows" not in weights(two)  # the saved model has the plain full matrix
