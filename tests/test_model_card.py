"""The model card huggingface_hub reads back (metadata, eval results, tables) and the upload's one-line failures."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import HfHubHTTPError
from tokenizers import Tokenizer
from tokenizers.models import BPE, Unigram, WordPiece

from ner_accel.errors import UsageError
from ner_accel.hub import hub_reachable
from ner_accel.options.train_config import TrainConfig
from ner_accel.reporting import hub_upload as hub_module
from ner_accel.reporting.hub_upload import check_push_target, push_to_hub
from ner_accel.reporting.model_card import (
    base_model_license,
    evaluation_sets,
    model_card,
    model_card_for_run,
    word_aware_tokenizer,
    write_model_card,
)
from tests.conftest import TRAIN, VALIDATION, XLMR_SHAPE, run_training

# ---------------------------------------------------------------------------------------------------------------
# A real tiny run on two data folders: "de" (a language code) and "mydata" (not one).


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("card-run")
    for folder in ("de", "mydata"):
        (root / folder).mkdir()
        (root / folder / "train.conll").write_text(TRAIN, encoding="utf-8")
        (root / folder / "validation.conll").write_text(VALIDATION, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:  # the autouse cache isolation is per test; this runs once
        patch.setenv("HF_DATASETS_CACHE", str(root / "hf-cache"))
        argv = ["--model", tiny_model, "--data-dir", root / "de", root / "mydata", "--output-dir", root]
        # Trained until it tags something, so the F1 checked below is not a trivial 0.0; evaluated once, at the end.
        argv += ["--run-name", "run", "--num-train-epochs", "8", "--per-device-train-batch-size", "2"]
        argv += ["--learning-rate", "1e-2", "--eval-steps", "1000"]
        assert run_training(argv) == 0
    return root / "run"


def final_results(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))["final"]


def results_by_set(card: ModelCard) -> dict[tuple, dict[str, float]]:
    """{(dataset type, config, split, task): {metric: value}} from the card's parsed eval results."""
    found: dict[tuple, dict[str, float]] = {}
    for result in card.data.eval_results:
        key = (result.dataset_type, result.dataset_config, result.dataset_split, result.task_type)
        found.setdefault(key, {})[result.metric_type] = result.metric_value
    return found


def test_card_of_a_real_run_loads_back_with_its_eval_results(tiny_run):
    write_model_card(tiny_run / "model", model_card_for_run(tiny_run, repo_id="my-user/tiny-ner"))
    loaded = ModelCard.load(tiny_run / "model" / "README.md")
    final = final_results(tiny_run)
    assert 0 < final["de"]["f1"] < 1
    assert results_by_set(loaded) == {
        (name, name, "validation", "token-classification"): {m: final[name][m] for m in ("f1", "precision", "recall")}
        for name in ("de", "mydata")
    }
    assert {r.dataset_name for r in loaded.data.eval_results} == {"de (local files)", "mydata (local files)"}
    assert loaded.data.language == ["de"]  # "mydata" is not a language
    assert loaded.data.model_name == "tiny-ner"
    assert loaded.data.pipeline_tag == "token-classification"
    assert loaded.data.library_name == "transformers"
    assert {"ner_accel", "token-classification", "ner"} <= set(loaded.data.tags)
    # A local base model without a card, local data: no license, base model or Hub dataset is claimed.
    assert loaded.data.license is None and loaded.data.base_model is None and loaded.data.datasets is None
    assert f"| mean over 2 sets | | | {final['mean_f1']:.4f} | | |" in loaded.text
    assert "`O`, `B-LOC`, `I-LOC`, `B-ORG`, `I-ORG`, `B-PER`, `I-PER`" in loaded.text
    assert 'model="my-user/tiny-ner"' in loaded.text


def per_type_rows(text: str) -> dict[str, dict[str, list[str]]]:
    """{evaluation set name: {type: [precision, recall, f1, f1 interval, support]}} from the card's per-type tables."""
    tables = {}
    for section in text.split("### Per entity type: ")[1:]:
        name, _, rest = section.partition("\n")
        rows = re.findall(
            r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+-[\d.]+) \| (\d+) \|$", rest, flags=re.MULTILINE
        )
        tables[name] = {row[0]: list(row[1:]) for row in rows}
    return tables


def test_per_type_tables_equal_the_results(tiny_run):
    final = final_results(tiny_run)
    tables = per_type_rows(model_card_for_run(tiny_run).text)
    assert tables == {
        f"{name} (local files)": {
            kind: [
                *(f"{m[k]:.4f}" for k in ("precision", "recall", "f1")),
                "-".join(f"{v:.4f}" for v in m["f1_interval"]),
                str(m["support"]),
            ]
            for kind, m in final[name]["per_type"].items()
        }
        for name in ("de", "mydata")
    }
    assert set(tables["de (local files)"]) == {"LOC", "ORG", "PER"}


def test_training_configuration_in_the_card(tiny_run):
    text = model_card_for_run(tiny_run).text
    assert "| epochs | 8 |" in text
    assert "| batch size | 2 sentences per optimizer step (2 per device x 1 process(es) x 1 accumulation) |" in text
    assert "| optimizer | AdamW, learning rate 0.01, weight decay 0.01" in text
    assert "| schedule | linear, no warmup |" in text
    assert "| seed | 42 |" in text


# ---------------------------------------------------------------------------------------------------------------
# Hand-made results of a Hub run on three PAN-X languages.

HUB_RESULTS = {
    language: {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall),
        "support": 4000 + i,
        "sentences": 10000,
        "per_type": {kind: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 1000 + i} for kind in "LOP"},
    }
    for i, (language, precision, recall) in enumerate(
        [("de", 0.8612, 0.8701), ("fr", 0.8123, 0.8399), ("en", 0.7, 0.7)]
    )
}
HUB_RESULTS["mean_f1"] = sum(HUB_RESULTS[lang]["f1"] for lang in ("de", "fr", "en")) / 3


def hub_settings(**overrides) -> dict:
    return {
        **TrainConfig(languages=["de", "fr", "en"]).to_dict(),
        "num_processes": 4,
        "mixed_precision": "bf16",
        "labels": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
        **overrides,
    }


def front_matter(card: ModelCard) -> dict:
    """The YAML block as plain data, read without huggingface_hub."""
    return yaml.safe_load(str(card).split("---\n")[1])


def test_hub_run_card_parses_with_every_language_and_split(tiny_model):
    settings = hub_settings(model="FacebookAI/xlm-roberta-base", gradient_accumulation_steps=2)
    card = model_card(tiny_model, settings, HUB_RESULTS, repo_id="me/xlmr-panx")
    parsed = ModelCard(str(card))
    assert results_by_set(parsed) == {
        ("google/xtreme", f"PAN-X.{lang}", "validation", "token-classification"): {
            m: HUB_RESULTS[lang][m] for m in ("f1", "precision", "recall")
        }
        for lang in ("de", "fr", "en")
    }
    assert {r.dataset_name for r in parsed.data.eval_results} == {
        f"PAN-X.{lang} (google/xtreme)" for lang in "de fr en".split()
    }
    assert parsed.data.language == ["de", "fr", "en"]
    assert parsed.data.datasets == ["google/xtreme"]
    assert parsed.data.base_model == "FacebookAI/xlm-roberta-base"
    assert parsed.data.license == "mit"
    assert parsed.data.model_name == "xlmr-panx"
    assert (
        "| batch size | 192 sentences per optimizer step (24 per device x 4 process(es) x 2 accumulation) |"
        in card.text
    )
    assert "| precision | bf16 |" in card.text


def test_metadata_is_what_the_hub_validates(tiny_model):
    """ModelCard.validate() posts the card to the Hub; offline, check the shape the Hub's schema asks for."""
    metadata = front_matter(model_card(tiny_model, hub_settings(), HUB_RESULTS))
    assert set(metadata) == {
        "language", "license", "base_model", "datasets", "library_name", "metrics", "pipeline_tag", "tags",
        "model-index",
    }  # fmt: skip
    assert all(re.fullmatch(r"[a-z]{2,3}", code) for code in metadata["language"])
    assert all(isinstance(metadata[key], str) for key in ("license", "base_model", "library_name", "pipeline_tag"))
    (entry,) = metadata["model-index"]
    assert isinstance(entry["name"], str)
    for result in entry["results"]:
        assert result["task"]["type"] == "token-classification"
        assert {"type", "name", "config", "split"} <= set(result["dataset"])
        assert [m["type"] for m in result["metrics"]] == ["f1", "precision", "recall"]
        assert all(isinstance(m["value"], float) for m in result["metrics"])


def test_the_hub_accepts_the_card(tiny_model):
    """The Hub's own validation, where it can be reached (it cannot from the CI machines)."""
    if not hub_reachable.__wrapped__():
        pytest.skip("ModelCard.validate() posts the card to the Hugging Face Hub, which is unreachable from here")
    model_card(tiny_model, hub_settings(model="FacebookAI/xlm-roberta-base"), HUB_RESULTS).validate()


def test_languages_only_for_language_codes():
    names = ["de", "mydata", "data", "EN", "fr", "panx-de"]
    sets = evaluation_sets({"data_dir": ["x"]}, names)
    assert [s["language"] for s in sets] == ["de", None, None, None, "fr", None]
    assert [s["config"] for s in sets] == names  # each set stays distinct in the model-index


def test_base_model_license(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A base model\n", encoding="utf-8")
    assert base_model_license(str(tmp_path)) == "apache-2.0"
    (tmp_path / "README.md").write_text("# No metadata\n", encoding="utf-8")
    assert base_model_license(str(tmp_path)) is None
    assert base_model_license("FacebookAI/xlm-roberta-large") == "mit"
    assert base_model_license("google-bert/bert-base-multilingual-cased") == "apache-2.0"
    assert base_model_license("someone/unknown-model") is None


def python_snippet(card: ModelCard) -> str:
    return card.text.split("```python\n")[1].split("```")[0]


def test_usage_snippet_runs_with_a_wordpiece_model(tiny_model, capsys):
    text = model_card(tiny_model, hub_settings(), HUB_RESULTS).text
    assert 'aggregation_strategy="first"' in text and "marks word continuations" in text
    exec(python_snippet(model_card(tiny_model, hub_settings(), HUB_RESULTS)), {})
    assert capsys.readouterr().out.startswith("[")  # the pipeline's entities (a random model finds any or none)


@pytest.mark.skipif(not (XLMR_SHAPE / "tokenizer.json").is_file(), reason="../shared XLM-R tokenizer is absent")
def test_usage_for_sentencepiece_recommends_word_exact_tagging(tmp_path):
    shutil.copy(XLMR_SHAPE / "tokenizer.json", tmp_path / "tokenizer.json")
    card = model_card(tmp_path, hub_settings(), HUB_RESULTS)
    usage = card.text.split("## Usage")[1]
    assert usage.index("python -m ner_accel.predict") < usage.index("pipeline(")  # the word-exact way first
    snippet = python_snippet(card)
    assert 'aggregation_strategy="first"' in snippet and "is_split_into_words=True" in snippet
    assert '"Angela Merkel besuchte Paris .".split()' in snippet  # the period split off, as in PAN-X
    compile(snippet, "snippet", "exec")
    assert "`simple` cuts words" in usage


def bpe_tokenizer(prefix: str | None) -> Tokenizer:
    if prefix:  # the merges spell continuations with it
        return Tokenizer(
            BPE({"a": 0, f"{prefix}b": 1, "ab": 2}, [("a", f"{prefix}b")], continuing_subword_prefix=prefix)
        )
    options = {} if prefix is None else {"continuing_subword_prefix": prefix}
    return Tokenizer(BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")], **options))


def wordpiece_with_a_tricky_vocabulary() -> Tokenizer:
    """A vocabulary entry spelled like the key, and an added token whose text holds the key with a string value."""
    tokenizer = Tokenizer(WordPiece({"[UNK]": 0, "continuing_subword_prefix": 1}, unk_token="[UNK]"))
    tokenizer.add_tokens(['"continuing_subword_prefix": "##"'])
    return tokenizer


@pytest.mark.parametrize(
    "make, word_aware",
    [
        (lambda: Tokenizer(WordPiece({"[UNK]": 0}, unk_token="[UNK]")), True),
        (lambda: Tokenizer(WordPiece({"[UNK]": 0}, unk_token="[UNK]", continuing_subword_prefix="@@")), True),
        (lambda: bpe_tokenizer(None), False),
        (lambda: bpe_tokenizer(""), False),
        (lambda: bpe_tokenizer("##"), True),
        (lambda: Tokenizer(Unigram([("<unk>", 0.0), ("continuing_subword_prefix", -1.0)], 0)), False),
        (wordpiece_with_a_tricky_vocabulary, True),
    ],
)
def test_word_awareness_is_the_models_continuation_prefix(make, word_aware, tmp_path):
    tokenizer = make()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    parsed = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    assert bool(parsed.get("continuing_subword_prefix")) is word_aware  # what the text search must agree with
    assert word_aware_tokenizer(tmp_path) is word_aware


def test_no_tokenizer_file_is_not_word_aware(tmp_path):
    assert word_aware_tokenizer(tmp_path) is False


def test_write_model_card_replaces_readme_whole(tiny_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    (model_dir / "README.md").write_text("old\n", encoding="utf-8")
    card = model_card(model_dir, hub_settings(), HUB_RESULTS)
    write_model_card(model_dir, card)
    assert (model_dir / "README.md").read_text(encoding="utf-8") == str(card)
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------------------
# Pushing: refused before any work, or failing fast and leaving the model where it is.


@pytest.mark.parametrize("repo_id", ["a/b/c", "has space/model", "-leading", "double--dash", "x.git", ""])
def test_malformed_repo_id_refused(repo_id, tmp_path):
    with pytest.raises(UsageError, match=r"^--push-to-hub .*: not a Hub repository id \(.*\); pass name or owner/name"):
        check_push_target(repo_id, token="hf_anything")
    with pytest.raises(UsageError, match="not a Hub repository id"):  # before looking at the model directory
        push_to_hub(tmp_path / "missing", repo_id, token="hf_anything")


def test_missing_token_refused_before_training_and_at_push(tiny_model, monkeypatch):
    monkeypatch.setattr(hub_module, "get_token", lambda: None)
    with pytest.raises(UsageError, match=r"^--push-to-hub me/model: no Hugging Face token; run `hf auth login`"):
        check_push_target("me/model")
    monkeypatch.setattr(hub_module, "hub_reachable_now", lambda: True)
    with pytest.raises(UsageError, match=f"the model is saved in {re.escape(str(tiny_model))}"):
        push_to_hub(tiny_model, "me/model")


def http_error(status: int) -> HfHubHTTPError:
    """The Hub's error as huggingface_hub raises it, without building a transport-library response."""
    error = HfHubHTTPError.__new__(HfHubHTTPError)
    Exception.__init__(error, f"{status} Client Error: for url https://huggingface.co/api/repos/create")
    error.response = SimpleNamespace(status_code=status)
    return error


@pytest.mark.parametrize(
    "failure, message",
    [
        (http_error(401), r"cannot push to me/model: the Hub rejected the token \(401\); run `hf auth login`"),
        (http_error(403), r"cannot push to me/model: the token may not write to me/model \(403\)"),
        (http_error(500), r"cannot push to me/model: the Hub answered 500: 500 Client Error"),
        (ConnectionResetError("reset by peer"), r"cannot push to me/model \(ConnectionResetError: reset by peer\)"),
    ],
)
def test_push_failures_are_one_line_and_keep_the_model(failure, message, tiny_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.setattr(hub_module, "hub_reachable_now", lambda: True)
    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(UsageError, match=message) as raised:
        push_to_hub(tiny_model, "me/model", token="hf_anything")
    assert "\n" not in str(raised.value)
    assert f"upload it later with `hf upload me/model {tiny_model}`" in str(raised.value)


def test_push_uploads_the_model_directory(tiny_model, monkeypatch):
    calls = []
    monkeypatch.setattr(hub_module, "hub_reachable_now", lambda: True)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(kw))
    assert push_to_hub(tiny_model, "me/model", token="hf_anything") == "https://huggingface.co/me/model"
    assert [(c["repo_id"], Path(c["folder_path"])) for c in calls] == [("me/model", tiny_model)]


PUSH_OFFLINE = """
import sys, time
from pathlib import Path
from ner_accel.errors import UsageError
from ner_accel.reporting.hub_upload import push_to_hub
start = time.perf_counter()
try:
    push_to_hub(Path(sys.argv[1]), "my-user/tiny-ner")
except UsageError as error:
    print(f"{time.perf_counter() - start:.3f}")
    print(error)
"""


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*")}


@pytest.mark.parametrize("offline_variable", ["1", None], ids=["HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE-unset"])
def test_push_offline_fails_fast_and_keeps_the_model(offline_variable, tiny_model, tmp_path):
    if offline_variable is None and hub_reachable.__wrapped__():
        pytest.skip("the Hugging Face Hub is reachable from here; this checks the unreachable path")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model, model_dir)
    before = tree_digest(model_dir)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if offline_variable:
        env["HF_HUB_OFFLINE"] = offline_variable
    done = subprocess.run(
        [sys.executable, "-c", PUSH_OFFLINE, str(model_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    seconds, message = done.stdout.strip().split("\n")
    assert float(seconds) < 5.0
    assert message == (
        f"cannot reach the Hugging Face Hub to push my-user/tiny-ner; the model is saved in {model_dir}; "
        f"upload it later with `hf upload my-user/tiny-ner {model_dir}` or rerun with network"
    )
    assert tree_digest(model_dir) == before


def test_train_with_push_to_hub_offline_saves_then_fails_in_one_line(
    tiny_model, conll_dir, tmp_path, monkeypatch, capsys
):
    """The run's model, card and report are saved; the upload that cannot happen fails at once, not with a traceback."""
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # a token is there; only the Hub is out of reach
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--model", tiny_model, "--data-dir", conll_dir, "--output-dir", tmp_path, "--run-name", "run",
            "--per-device-train-batch-size", "2", "--num-train-epochs", "1"]  # fmt: skip
    assert run_training([*args, "--push-to-hub", "not/a/valid/repo"]) == 2  # refused before any work
    assert "not/a/valid/repo" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert run_training([*args, "--push-to-hub", "my-user/tiny-ner"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    model = tmp_path / "run" / "model"
    assert error.startswith("error: cannot reach the Hugging Face Hub to push my-user/tiny-ner") and str(model) in error
    card = ModelCard.load(model / "README.md")
    assert card.data.model_name == "my-user/tiny-ner" or "my-user/tiny-ner" in card.content
    assert (model / "model.safetensors").is_file() and (tmp_path / "run" / "report.html").is_file()
