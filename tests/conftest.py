"""Shared fixtures: a tiny WordPiece tokenizer and 2-layer encoder built on the fly, hand-written CoNLL files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, PreTrainedTokenizerFast

from ner_accel.modeling.heads import BertForTokenClassification

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MINILM = SHARED / "models" / "minilm-l6-h384-uncased"
XLMR_SHAPE = SHARED / "models" / "xlm-roberta-base-shape"
PANX = SHARED / "data" / "panx"

needs_shared = pytest.mark.skipif(
    not (MINILM / "model.safetensors").is_file() or not (PANX / "en" / "train.conll").is_file(),
    reason="../shared (real PAN-X data and MiniLM weights) is absent; it ships beside the checkout in CI",
)

TRAIN = """\
-DOCSTART-\tO

Angela\tB-PER
Merkel\tI-PER
besuchte\tO
Paris\tB-LOC
.\tO

Die\tO
Deutsche\tB-ORG
Bahn\tI-ORG
fährt\tO
nach\tO
Berlin\tB-LOC

Johann\tB-PER
Sebastian\tI-PER
Bach\tI-PER
lebte\tO
in\tO
Leipzig\tB-LOC

Siemens\tB-ORG
baut\tO
Züge\tO
in\tO
München\tB-LOC
.\tO

Paris\tB-LOC
und\tO
Berlin\tB-LOC
sind\tO
Städte\tO
"""

VALIDATION = """\
Merkel\tB-PER
fährt\tO
nach\tO
Leipzig\tB-LOC

Die\tO
Bahn\tB-ORG
baut\tO
in\tO
Paris\tB-LOC

Bach\tB-PER
lebte\tO
in\tO
München\tB-LOC
.\tO
"""


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--auto-precision",
        choices=["bf16", "no"],
        default=None,
        help="What --mixed-precision auto resolves to in this run (default: what this CPU does natively). CI runs "
        "the suite once each way, so it passes on CPUs with native bf16 and on those without.",
    )


def pytest_configure(config) -> None:
    # accelerate launch's own variable: auto honours it, in this process and in every process a test starts.
    forced = config.getoption("--auto-precision")
    if forced:
        os.environ["ACCELERATE_MIXED_PRECISION"] = forced


def pytest_report_header(config) -> str:
    from ner_accel.training.precision import resolve_mixed_precision

    return f"--mixed-precision auto resolves to: {resolve_mixed_precision('auto', use_cpu=True)}"


WORDS = sorted({line.split("\t")[0].lower() for line in (TRAIN + VALIDATION).splitlines() if "\t" in line})


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A real fast WordPiece tokenizer; some words split into pieces (##-continuations), some are whole."""
    pieces = set()
    for word in WORDS:
        if len(word) > 5:  # split long words into a head and ##-continuations, so alignment is exercised
            pieces.update([word[:3], *(f"##{word[i : i + 3]}" for i in range(3, len(word), 3))])
        else:
            pieces.add(word)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(pieces)]
    core = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )


def build_model_dir(path: Path, labels=("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"), **config) -> Path:
    """Save a tiny randomly initialised BERT (2 layers, hidden 32) with the tiny tokenizer, like a Hub model."""
    tokenizer = build_tokenizer()
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(labels),
    )
    settings.update(config)
    model = BertForTokenClassification(BertConfig(**settings))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_no_dropout(tmp_path_factory) -> Path:
    """Dropout off: runs that differ only in process count or accumulation must give the same weights."""
    return build_model_dir(
        tmp_path_factory.mktemp("tiny-model-nodrop"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


@pytest.fixture
def conll_dir(tmp_path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "train.conll").write_text(TRAIN, encoding="utf-8")
    (directory / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    return directory


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test tokenizes into its own datasets cache, never reaches for the network, and starts with accelerate's
    process-wide state empty (a command run by an earlier test leaves its mixed precision there, which a bare
    `Accelerator()` would then take)."""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run_training(argv: list[str]) -> int:
    """ner_accel.train.main in this process, with accelerate's process-wide state reset around it."""
    from accelerate.state import AcceleratorState

    from ner_accel.train import main

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return main([str(a) for a in argv])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


# ---------------------------------------------------------------------------------------------------------------
# multilingual-e5-small (real weights, XLM-R's tokenizer), converted from ../shared once per machine into a cache
# outside the checkout by benchmarks/shared_models.py, which the benchmarks use too.


def load_benchmark(name: str):
    """benchmarks.NAME (benchmarks/ is a package), imported with the checkout's root on the path."""
    import importlib
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"benchmarks.{name}")


def load_shared_models():
    return load_benchmark("shared_models")


@pytest.fixture(scope="session")
def multilingual_model() -> Path:
    """The converted model's directory; skips only where ../shared is absent (a conversion error fails)."""
    shared_models = load_shared_models()
    missing = shared_models.missing_sources()
    if missing:
        pytest.skip(f"{missing[0]} not found: ../shared (multilingual-e5-small) ships beside the checkout in CI")
    return shared_models.multilingual_e5_small()
