"""The model's Hub model card: README.md in the saved model directory, in the form the Hub reads.

train.py writes it at the final save from the settings it writes to train_config.json and the final results:
the card goes into the model directory before that is renamed into place (rundir.artifacts.save_final);
`model_card_for_run(run_dir)` builds the same card afterwards from a finished run. The upload is hub.push_to_hub.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..rundir.files import atomic_write

# Licenses of well-known base models, as their Hub cards state them; any other Hub id gets no license claim.
MIT_MODELS = ["xlm-roberta-base", "xlm-roberta-large", "FacebookAI/xlm-roberta-base", "FacebookAI/xlm-roberta-large"]
MIT_MODELS += [f"intfloat/multilingual-e5-{size}" for size in ("small", "base", "large")]
APACHE_MODELS = [
    f"{owner}bert-base-{variant}"
    for owner in ("", "google-bert/")
    for variant in ("cased", "uncased", "multilingual-cased", "multilingual-uncased")
]
KNOWN_LICENSES = {**dict.fromkeys(MIT_MODELS, "mit"), **dict.fromkeys(APACHE_MODELS, "apache-2.0")}

# ISO 639-1: a data folder is claimed as a language only under one of these names (de, en, fr: yes; mydata: no).
ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en
    eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka
    kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl
    nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv
    sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split()
)

# Each ends with its only punctuation mark, a period, which the usage snippet splits off.
EXAMPLES = {"de": "Angela Merkel besuchte Paris.", "fr": "Angela Merkel a visité Paris."}
TASK = "token-classification"


def is_hub_id(name: str) -> bool:
    """A Hub repository id, not a path on this machine."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not Path(name).exists()


def base_model_license(model: str) -> str | None:
    """The license in a local model directory's card, or of a well-known Hub model; None when unknown."""
    readme = Path(model) / "README.md"
    if readme.is_file():
        try:
            license_id = ModelCard.load(readme, ignore_metadata_errors=True).data.license
        except (ValueError, OSError):  # a README without readable metadata claims nothing
            return None
        return license_id if isinstance(license_id, str) else None
    return KNOWN_LICENSES.get(model) if is_hub_id(model) else None


def evaluation_sets(settings: dict, names: list[str]) -> list[dict]:
    """Per evaluation set (a results key): its model-index dataset fields and its language, if it is one."""
    dataset = settings.get("dataset", "google/xtreme")
    sets = []
    for name in names:
        language = name if name in ISO_639_1 else None
        if settings.get("data_dir"):  # local files named after their folder: no Hub dataset is claimed
            fields = dict(type=name, name=f"{name} (local files)", config=name)
        elif is_hub_id(dataset):
            fields = dict(type=dataset, name=f"PAN-X.{name} ({dataset})", config=f"PAN-X.{name}")
        else:
            local = Path(dataset).name
            fields = dict(
                type=local, name=f"PAN-X.{name} (local files in the google/xtreme layout)", config=f"PAN-X.{name}"
            )
        sets.append({"key": name, "language": language, **fields})
    return sets


def eval_results(sets: list[dict], results: dict, split: str) -> list[EvalResult]:
    """F1, precision and recall of each evaluation set: one model-index entry per set."""
    return [
        EvalResult(
            task_type=TASK,
            task_name="Named-entity recognition",
            dataset_type=s["type"],
            dataset_name=s["name"],
            dataset_config=s["config"],
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{metric} (entity-level, seqeval)",
            metric_value=float(results[s["key"]][metric]),
        )
        for s in sets
        for metric in ("f1", "precision", "recall")
    ]


# tokenizer.json's "continuing_subword_prefix" with a non-empty string value: the model's own key (vocabulary
# entries of that spelling map to ids or scores, not strings; inside a string its quotes would be escaped).
CONTINUATION_PREFIX = re.compile(rb'"continuing_subword_prefix"\s*:\s*"(?:[^"\\]|\\.)+"')


def word_aware_tokenizer(model_dir: Path) -> bool:
    """WordPiece-style tokenizers mark continuations ("##"), so the pipeline knows where words end; SentencePiece
    (XLM-R) does not, and the pipeline then guesses words from spaces. Looked up in the text rather than parsed:
    parsing XLM-R's 17 MB tokenizer.json took 0.6 s of every run's final save."""
    try:
        raw = (model_dir / "tokenizer.json").read_bytes()
    except OSError:
        return False
    return CONTINUATION_PREFIX.search(raw) is not None


def interval(metrics: dict) -> str:
    low, high = metrics.get("f1_interval") or ("-", "-")
    return f"{low:.4f}-{high:.4f}" if isinstance(low, float) else "-"


def results_section(sets: list[dict], results: dict, split: str) -> str:
    lines = [
        f"Entity-level micro precision, recall and F1 (seqeval's default mode, one tag per word) on the {split} split.",
        "",
        "| evaluation set | precision | recall | F1 | F1 95% interval | entities | sentences |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in sets:
        m = results[s["key"]]
        lines.append(
            f"| {s['name']} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {interval(m)} | "
            f"{m['support']} | {m.get('sentences', '-')} |"
        )
    if "mean_f1" in results:
        lines.append(f"| mean over {len(sets)} sets | | | {results['mean_f1']:.4f} | | | |")
    for s in sets:
        lines += [
            "",
            f"### Per entity type: {s['name']}",
            "",
            "| type | precision | recall | F1 | F1 95% interval | support |",
        ]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for kind, m in sorted(results[s["key"]]["per_type"].items()):
            lines.append(
                f"| {kind} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {interval(m)} | {m['support']} |"
            )
    lines += ["", "Intervals: 95 % percentile bootstrap over sentences (1,000 resamples); entities: gold entities."]
    return "\n".join(lines)


def configuration_section(settings: dict, base: str) -> str:
    processes, accumulation = settings.get("num_processes", 1), settings["gradient_accumulation_steps"]
    per_device = settings["per_device_train_batch_size"]
    if settings.get("warmup_steps"):
        warmup = f"warmup {settings['warmup_steps']} steps"
    elif settings.get("warmup_ratio"):
        warmup = f"warmup over {settings['warmup_ratio']} of the steps"
    else:
        warmup = "no warmup"
    precision = settings.get("mixed_precision", "no")
    rows = {
        "base model": base,
        "epochs": settings["num_train_epochs"],
        "batch size": f"{per_device * processes * accumulation} sentences per optimizer step "
        f"({per_device} per device x {processes} process(es) x {accumulation} accumulation)",
        "optimizer": f"AdamW, learning rate {settings['learning_rate']}, weight decay {settings['weight_decay']} "
        "(not on biases and LayerNorm)",
        "schedule": f"{settings['lr_scheduler_type']}, {warmup}",
        "gradient clipping": settings.get("max_grad_norm") or "off",
        "seed": settings["seed"],
        "precision": "fp32" if precision == "no" else precision,
        "max length": settings.get("max_length") or "the model's limit (at most 512 sub-tokens)",
        "training sentences": settings.get("max_train_samples") or "all",
        "labelled sub-tokens": "all of each word" if settings.get("label_all_tokens") else "the first of each word",
        "final model": "best by validation F1" if settings.get("load_best") else "the last step",
    }
    if settings.get("language_fractions"):
        rows["language fractions"] = settings["language_fractions"]
    return "\n".join(["| setting | value |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows.items())])


def usage_section(model_id: str, word_aware: bool, language: str | None) -> str:
    """The pipeline with the aggregation that suits the tokenizer, and ner_accel's word-exact tagger."""
    example = EXAMPLES.get(language or "", "Angela Merkel visited Paris.")
    predict = f"""```bash
python -m ner_accel.predict --model {model_id} "{example}"
```"""
    pipeline = f"""```python
from transformers import pipeline

tagger = pipeline("token-classification", model="{model_id}", aggregation_strategy="first")
print(tagger("{example}"))"""
    if word_aware:
        return f"""{pipeline}
```

The tokenizer marks word continuations (`##`), so `first` tags each word by its first sub-token, as in training.
It splits at every punctuation mark, hyphens and apostrophes too; for words as PAN-X has them (`Baden-Württemberg`,
`d'Italie`), and long texts in overlapping windows, use ner_accel's tagger:

{predict}
"""
    # Measured on multilingual-e5-small (XLM-R's tokenizer) fine-tuned on PAN-X.de: see the ner_accel report.
    return f"""For entities on exactly the words the model was trained on, with character offsets into the text, use
ner_accel's tagger (punctuation split off as in PAN-X, hyphenated names kept whole, long texts in windows):

{predict}

With `transformers` alone:

{pipeline}
# words with punctuation split off, as in training: entities on whole words
print(tagger("{example[:-1]} .".split(), is_split_into_words=True))
```

The SentencePiece tokenizer does not mark where a word ends, so on raw text the pipeline takes whatever stands between
spaces as a word. With `first` (each word tagged by its first sub-token, as in training) punctuation joins the entity
next to it (`Berlin.`), and a word behind an opening bracket or quote takes that mark's tag (`(FC Bayern München)`
gives `Bayern München)`). `simple` cuts words (`Hé` + `lène Lefèvre`); `max` and `average` let pieces the model was
never trained to tag vote, and lose entities such as `Berlin.`. Read entities from `start`/`end`: the pipeline's
`word` drops the spaces (`HélèneLefèvre`).
"""


def model_card(
    model_dir: Path,
    settings: dict,
    results: dict,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    split: str = "validation",
    files: Path | None = None,
) -> ModelCard:
    """The Hub model card of a saved model.

    settings: the resolved configuration as in train_config.json (TrainConfig fields plus num_processes,
    mixed_precision, labels); results: {evaluation set: metrics, ..., "mean_f1"?} as in metrics.json's "final";
    repo_id: the Hub repository the model goes to (the usage snippet loads it from there, else from model_dir);
    base_model: the Hub id of the base model when settings["model"] is a local copy of it; files: where the model's
    files are being written, when not yet in model_dir (the final save's staging directory)."""
    model = settings["model"]
    base_model = base_model or (model if is_hub_id(model) else None)
    sets = evaluation_sets(settings, [key for key in results if key != "mean_f1"])
    languages = list(dict.fromkeys(s["language"] for s in sets if s["language"]))
    license_id = base_model_license(model) or (KNOWN_LICENSES.get(base_model) if base_model else None)
    dataset = settings.get("dataset", "google/xtreme")
    hub_data = not settings.get("data_dir") and is_hub_id(dataset)
    name = repo_id.split("/")[-1] if repo_id else Path(os.path.abspath(model_dir)).parent.name
    data = ModelCardData(
        language=languages or None,
        license=license_id,
        base_model=base_model,
        datasets=[dataset] if hub_data else None,
        library_name="transformers",
        pipeline_tag=TASK,
        tags=["ner_accel", TASK, "ner"],
        metrics=["f1", "precision", "recall"],
        model_name=name,
        eval_results=eval_results(sets, results, split),
    )
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"`{Path(model).name}` (local)"
    trained_on = ", ".join(s["name"] for s in sets)
    labels = settings.get("labels") or []
    types = sorted({label.split("-", 1)[1] for label in labels if "-" in label})
    body = f"""
# {name}

{base} fine-tuned for named-entity recognition ({", ".join(types)}, IOB2 tags) on {trained_on} with ner_accel,
a hand-written Hugging Face Accelerate training loop.{f" License: `{license_id}`, the base model's." if license_id else ""}

## Results

{results_section(sets, results, split)}

## Labels

{", ".join(f"`{label}`" for label in labels)} (in the order of `config.json`'s `id2label`).

## Training configuration

{configuration_section(settings, base)}

## Usage

{usage_section(repo_id or str(model_dir), word_aware_tokenizer(files or model_dir), languages[0] if languages else None)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def model_card_for_run(run_dir: Path, **options) -> ModelCard:
    """The card of a finished run, from its train_config.json and the final results in metrics.json."""
    settings = json.loads((run_dir / "train_config.json").read_text(encoding="utf-8"))
    results = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["final"]
    return model_card(run_dir / "model", settings, results, **options)


def write_model_card(model_dir: Path, card: ModelCard) -> None:
    """README.md through the run's atomic write: the Hub and readers never see half a card; a full disk is one line."""
    with atomic_write(model_dir / "README.md", f"the model card {model_dir / 'README.md'}") as staging:
        card.save(staging)
