"""ner_accel.export: fp32 and INT8 exports of a tiny model through the parity gate, a damaged export refused, the
export loaded by a client this project did not write, and predict/evaluate on it equal to torch."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tokenizer
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, BertConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ner_accel import evaluate, export, predict  # noqa: E402
from ner_accel.inference.export_check import parity_report  # noqa: E402
from ner_accel.inference.tagger import Tagger  # noqa: E402
from ner_accel.inference.windows import Windowing  # noqa: E402
from ner_accel.modeling.heads import BertForTokenClassification  # noqa: E402

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
EXPORT_FILES = {
    "model.onnx",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
    "export_check.json",
}
TEXTS = [
    "Angela Merkel besuchte Paris.",
    "Angela \u200b Merkel besuchte Paris. \u200b",  # zero-width spaces: words without a sub-token
    "Die Deutsche Bahn fährt nach Berlin, und Johann Bach lebte in Leipzig! " * 12,  # many windows at 16 sub-tokens
    "",
    "Siemens baut Züge in München \u2060und\u00ad Paris.",
]


def build_decisive_model(path):
    """A tiny 2-layer BERT with ner_accel's head and a scaled random classifier: clear winners among the tags, so
    8-bit weights keep the same argmax (what a fine-tuned model's confident tags look like), entities on every text."""
    tokenizer = build_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(40)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run directory (model/ and the train_config.json naming its data) and its fp32 and INT8 exports."""
    from conftest import TRAIN, VALIDATION

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(root / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        data = root / "data"
        data.mkdir()
        (data / "train.conll").write_text(TRAIN, encoding="utf-8")
        (data / "validation.conll").write_text(VALIDATION, encoding="utf-8")
        run = root / "run"
        build_decisive_model(run / "model")
        (run / "train_config.json").write_text(json.dumps({"data_dir": [str(data)], "tag_scheme": "auto"}))
        assert export.main(["--model", str(run), "--output", str(root / "fp32")]) == 0
        assert export.main(["--model", str(run), "--output", str(root / "int8"), "--quantize", "int8"]) == 0
    return {
        "root": root,
        "run": run,
        "model": run / "model",
        "data": data,
        "fp32": root / "fp32",
        "int8": root / "int8",
    }


def spans(entities: list[dict]) -> list[tuple[str, int, int, str]]:
    return [(e["type"], e["start"], e["end"], e["text"]) for e in entities]


def test_export_writes_the_model_its_card_and_the_gate_numbers(exported):
    for kind in ("fp32", "int8"):
        directory = exported[kind]
        assert {p.name for p in directory.iterdir()} == EXPORT_FILES
        report = json.loads((directory / "export_check.json").read_text())
        check = report["check"]
        assert check["passed"] and check["kind"] == kind and check["sentences"] == 3  # the run's validation file
        assert report["opset"] == 18 and report["quantize"] == ("int8" if kind == "int8" else "none")
        assert check["sentences_with_other_entities"] == 0
        card = (directory / "README.md").read_text()
        assert f"ONNX export ({kind})" in card and "Parity gate: passed" in card
        assert (
            f"{check['max_abs_logit_difference']:.2e}" in card
            and f"| overall | {check['f1_torch']['overall']:.4f}" in card
        )
    fp32 = json.loads((exported["fp32"] / "export_check.json").read_text())["check"]
    assert fp32["max_abs_logit_difference"] < 1e-4 and fp32["rule"].startswith("logits within 0.001")
    int8 = json.loads((exported["int8"] / "export_check.json").read_text())
    assert int8["check"]["max_abs_logit_difference"] > fp32["max_abs_logit_difference"]  # it is quantized
    assert "the fp32 export was" in int8["size_note"]


def test_int8_stores_matmul_weights_and_the_word_embedding_in_8_bits(exported):
    import onnx

    vocab = AutoConfig.from_pretrained(exported["model"]).vocab_size
    graph = onnx.load(str(exported["int8"] / "model.onnx")).graph
    weights = {t.name: (tuple(t.dims), onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
               for t in graph.initializer}  # fmt: skip
    # the word embedding: one byte a value, looked up and dequantized per batch
    assert weights["model.bert.embeddings.word_embeddings.weight_quantized"] == ((vocab, 32), 1)
    integer = [n for n in graph.node if n.op_type == "MatMulInteger"]
    expected = [((32, 7), 1)] + [((32, 32), 1)] * 8 + [((32, 64), 1)] * 2 + [((64, 32), 1)] * 2  # head + 2 layers x 6
    assert sorted(weights[n.input[1]] for n in integer) == sorted(expected)
    assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]  # none left in fp32
    # onnxruntime's transformer optimizer fused the float graph before quantizing: bias + GELU, residual + LayerNorm
    fused = [n.op_type for n in graph.node if n.domain == "com.microsoft"]
    assert fused.count("BiasGelu") == 2 and fused.count("SkipLayerNormalization") == 4


def test_predict_on_the_export_gives_torch_entities_on_long_texts_and_invisible_characters(exported, tmp_path):
    torch_tagger = Tagger.load(str(exported["run"]), max_length=16, batch_size=4)
    expected = torch_tagger.tag(TEXTS)
    assert sum(len(found) for found in expected) > 20 and len(expected[2]) > 12
    onnx_tagger = Tagger.load(str(exported["fp32"]), max_length=16, batch_size=4)
    assert type(onnx_tagger.model).__name__ == "OnnxTokenClassifier"
    found = onnx_tagger.tag(TEXTS)
    assert [spans(e) for e in found] == [spans(e) for e in expected]
    assert [e["score"] for d in found for e in d] == pytest.approx([e["score"] for d in expected for e in d], abs=1e-5)
    # INT8 keeps F1 (the gate's rule), not every tag: on this random 32-wide model some near ties flip.
    int8 = Tagger.load(str(exported["int8"]), max_length=16, batch_size=4).tag(TEXTS)
    assert len(int8[2]) > 12 and int8[3] == [] and all(e["text"] == TEXTS[i][e["start"] : e["end"]]
                                                        for i, d in enumerate(int8) for e in d)  # fmt: skip
    source = tmp_path / "docs.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    outputs = {}
    for name, model in (("torch", exported["run"]), ("onnx", exported["fp32"])):
        outputs[name] = tmp_path / f"{name}.jsonl"
        args = ["--model", str(model), "--input", str(source), "--output", str(outputs[name]), "--max-length", "16"]
        assert predict.main(args) == 0
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in outputs.items()}
    assert [spans(r["entities"]) for r in rows["onnx"]] == [spans(r["entities"]) for r in rows["torch"]]


def test_evaluate_on_the_export_scores_as_torch(exported, tmp_path):
    reports = {}
    for name, model in (("torch", exported["run"]), ("onnx", exported["fp32"])):
        output = tmp_path / f"{name}.json"
        args = ["--model", str(model), "--data-dir", str(exported["data"]), "--max-length", "8", "--output", str(output),
                "--mixed-precision", "no"]  # fmt: skip
        assert evaluate.main(args) == 0
        reports[name] = json.loads(output.read_text())["models"][0]["results"]["data"]
    assert reports["onnx"]["predicted"] == reports["torch"]["predicted"]
    assert (
        reports["onnx"]["f1"] == reports["torch"]["f1"] and reports["onnx"]["per_type"] == reports["torch"]["per_type"]
    )


def test_plain_onnxruntime_with_transformers_tokenizer_and_config_gives_the_torch_logits(exported):
    """The client Optimum's ORTModelForTokenClassification is built on (an InferenceSession fed the tokenizer's
    input_ids and attention_mask, labels from config.json), with no ner_accel import: the same logits."""
    import onnxruntime

    tokenizer = AutoTokenizer.from_pretrained(exported["fp32"])
    config = AutoConfig.from_pretrained(exported["fp32"])
    session = onnxruntime.InferenceSession(str(exported["fp32"] / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = tokenizer(["Angela Merkel besuchte Paris .", "Bahn", "Johann Sebastian Bach lebte in Leipzig"],
                      padding=True, return_tensors="np")  # fmt: skip
    (logits,) = session.run(["logits"], {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    reference = AutoModelForTokenClassification.from_pretrained(exported["model"]).eval()
    with torch.no_grad():
        expected = reference(
            input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(batch["attention_mask"])
        ).logits
    real = batch["attention_mask"].astype(bool)
    assert logits.shape == tuple(expected.shape) and np.abs(logits - expected.numpy())[real].max() < 1e-4
    assert [config.id2label[int(i)] for i in logits[0].argmax(-1)] == [
        config.id2label[int(i)] for i in expected[0].argmax(-1)
    ]
    assert {node.name for node in session.get_inputs()} == {"input_ids", "attention_mask"}
    assert session.get_inputs()[0].shape == ["batch", "sequence"]


# Optimum in a venv of its own: optimum-onnx 0.1.0, the newest with ORTModelForTokenClassification, pins
# transformers<4.58 and fails to import on 5.x (transformers.utils.is_offline_mode is gone), so it cannot share this
# environment. The venv (about 1.3 GB, 1.5 minutes to build on 2 cores, torch from the local wheel) is built once and
# kept in the system temp directory, keyed by Python, torch and the pins; later runs cost about 10 s (one process
# importing torch and Optimum).
OPTIMUM_REQUIREMENTS = ["optimum-onnx[onnxruntime]==0.1.0", "transformers>=4.36,<4.58"]
OPTIMUM_SCRIPT = """
import json, sys
import torch
from optimum.onnxruntime import ORTModelForTokenClassification
batch = {k: torch.tensor(v) for k, v in json.loads(sys.stdin.read()).items()}
logits = {}
for directory in sys.argv[1:]:
    model = ORTModelForTokenClassification.from_pretrained(directory)
    logits[directory] = model(**batch).logits.tolist()
print(json.dumps(logits))
"""


def optimum_python() -> Path:
    """The Python of a venv with Optimum, a transformers it accepts and this torch; skips if pip cannot install them."""
    requirements = [f"torch=={torch.__version__.split('+')[0]}", *OPTIMUM_REQUIREMENTS]
    key = hashlib.sha256(json.dumps([sys.version, requirements]).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"ner_accel-optimum-{key}"
    ready = venv / "installed.json"  # written last: a venv without it was interrupted and is built again
    if not ready.is_file():
        for command in (
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
        ):
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                pytest.skip(f"cannot install {' '.join(requirements)} into a venv for the Optimum test ({last})")
        ready.write_text(json.dumps(requirements))
    return venv / "bin" / "python"


def test_optimum_loads_the_export_with_the_same_logits(exported):
    """Optimum's ORTModelForTokenClassification, a client this project did not write, loads the fp32 and INT8
    exports: the fp32 logits are torch's, the INT8 ones onnxruntime's through ner_accel."""
    from ner_accel.inference.onnx_model import OnnxTokenClassifier

    python = optimum_python()
    tokenizer = AutoTokenizer.from_pretrained(exported["fp32"])  # transformers 4.x cannot read 5.x's tokenizer files
    batch = tokenizer(["Angela Merkel besuchte Paris .", "Johann Sebastian Bach lebte in Leipzig"], padding=True)
    feed = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    directories = [str(exported["fp32"]), str(exported["int8"])]
    ran = subprocess.run(
        [str(python), "-c", OPTIMUM_SCRIPT, *directories], input=json.dumps(feed), capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    logits = {directory: np.array(values) for directory, values in json.loads(ran.stdout).items()}
    inputs = {k: torch.tensor(v) for k, v in feed.items()}
    reference = AutoModelForTokenClassification.from_pretrained(exported["model"]).eval()
    with torch.no_grad():
        expected = reference(**inputs).logits.numpy()
        int8 = OnnxTokenClassifier(exported["int8"])(**inputs).logits.numpy()
    real = np.array(feed["attention_mask"], dtype=bool)
    assert logits[directories[0]].shape == expected.shape
    assert np.abs(logits[directories[0]] - expected)[real].max() < 1e-4
    assert np.abs(logits[directories[1]] - int8)[real].max() < 1e-4


def test_the_gate_refuses_a_damaged_export_and_keeps_the_earlier_one(exported, tmp_path, monkeypatch, capsys):
    import onnx
    from onnx import numpy_helper

    real_export = export.export_fp32

    def damaged(model, path, opset):  # the classifier's bias for B-PER raised: some words change their tag
        real_export(model, path, opset)
        graph = onnx.load(str(path))
        bias = next(t for t in graph.graph.initializer if t.name.endswith("classifier.bias"))
        values = numpy_helper.to_array(bias).copy()
        values[LABELS.index("B-PER")] += 25.0
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(export, "export_fp32", damaged)
    work = tmp_path / "work"
    output = work / "out"
    output.mkdir(parents=True)
    (output / "earlier.txt").write_text("an earlier export")
    args = ["--model", str(exported["run"]), "--output", str(output)]
    assert export.main(args) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars, one line
    assert line.startswith("error: refused: fp32 export against torch on 3 sentences: max |logit difference| 2.50e+01")
    assert "sentence(s) with other entities" in line and "nothing written (--accept-drop writes it anyway)" in line
    assert sorted(p.name for p in output.iterdir()) == ["earlier.txt"]
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # no staging left behind
    assert export.main([*args, "--accept-drop"]) == 0
    check = json.loads((output / "export_check.json").read_text())["check"]
    assert not check["passed"] and check["sentences_with_other_entities"] > 0 and check["max_abs_logit_difference"] > 1
    assert "Parity gate: **failed** (written with --accept-drop)" in (output / "README.md").read_text()


class Shifted:
    """An exported model stand-in whose logits lean towards O: fewer entities found, so a lower F1."""

    def __init__(self, model, shift: float) -> None:
        self.model, self.config, self.shift = model, model.config, shift

    def eval(self):  # scoring switches the model to eval for its pass and back to train after it
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, **inputs):  # every input passed on: the torch model is called packed, as predict calls it
        output = self.model(**inputs)
        output.logits[..., 0] += self.shift
        return output


def test_the_int8_rule_refuses_an_f1_drop_over_0_005_and_passes_within_it(exported):
    from ner_accel.data.readers import read_conll
    from ner_accel.modeling.loading import load_trained

    model = load_trained(str(exported["model"])).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported["model"])
    sentences = read_conll(exported["data"] / "validation.conll") * 4
    windowing = Windowing.of(tokenizer, 64)
    # argmax: the decisive random model finds entities only through lone I- tags, which Viterbi never starts with
    check = dict(quantized=True, decoding="argmax")
    same = parity_report(model, Shifted(model, 0.0), tokenizer, windowing, sentences, "check", **check)
    assert same["f1_torch"]["overall"] > 0.005  # something to lose
    assert same["passed"] and same["f1_drop"]["overall"] == 0.0
    worse = parity_report(model, Shifted(model, 1000.0), tokenizer, windowing, sentences, "check", **check)
    assert not worse["passed"] and worse["f1_onnx"]["overall"] == 0.0 and worse["f1_drop"]["overall"] > 0.005


def test_bad_inputs_are_one_line_and_exit_2(exported, tmp_path, capsys):
    bare = shutil.copytree(exported["model"], tmp_path / "bare")  # a model directory outside a run: no data named
    cases = [
        (["--model", str(exported["fp32"]), "--output", str(tmp_path / "a")], "is already an ONNX export"),
        (["--model", str(exported["run"]), "--output", str(exported["model"])], "holds the model being exported"),
        (["--model", str(bare), "--output", str(tmp_path / "b")], "pass --check-data DIR"),
        (["--model", str(exported["model"]), "--output", str(tmp_path / "c"), "--check-data", str(tmp_path / "none")],
         "--check-data"),
        (["--model", str(exported["run"]), "--output", str(tmp_path / "d"), "--max-check-samples", "0"],
         "--max-check-samples must be a positive integer, got 0"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert export.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_without_onnxruntime_export_and_predict_say_what_to_install(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    assert export.main(["--model", str(exported["run"]), "--output", str(tmp_path / "x")]) == 2
    assert "install it with pip install 'ner_accel[onnx]'" in capsys.readouterr().err
    assert predict.main(["--model", str(exported["fp32"]), "Paris"]) == 2
    assert "needs onnxruntime; install it with pip install 'ner_accel[onnx]'" in capsys.readouterr().err
